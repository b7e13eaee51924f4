"""Render annotated graphs as one self-contained HTML page (inline SVG + JS).

:func:`render` takes one or more *views* (the full graph and module-collapsed
versions of it, as built by :mod:`fxgrow.viz`), lays each out with
:func:`fxgrow.viz.placement.layered_layout` and writes them into a single
SVG.  Colours are CSS classes (one rule per group), node details live in one
JSON blob read by a small script: hover shows them, a click pins them and
highlights the node's groups, the legend highlights a group, the search box
finds nodes, the wheel zooms and dragging pans.  Nothing is loaded from the
network.

Examples
--------
>>> import networkx as nx
>>> G = nx.DiGraph(name="tiny")
>>> G.add_node("x", opcode="placeholder", op="input", target="x", module="", shape=(1, 4),
...            dtype="float32", layout="", groups=(), params=(), status="none", reason="",
...            cause=False)
>>> html = render([("full graph", G)], {}, {}, title="tiny")
>>> html.count("<svg"), 'data-i="0"' in html
(1, True)
"""

from __future__ import annotations

import html as _html
import json
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import networkx as nx

from ..ir.roles import BLOCKED, FIXED, GROWABLE
from .format import fmt_shape  # one formatter for the page and the DOT text
from .placement import layout_with_routes

__all__ = ["render"]

_NODE_H = 34
_CAUSE_H = 48
_LAYER_GAP = 34
_GAP = 16
_MARGIN = 20
_CHAR_W = 6.9
_MAX_CHARS = 34


def _esc(s: Any) -> str:
    return _html.escape(str(s), quote=True)


def _clip(s: str, n: int = _MAX_CHARS) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _short_op(d: Mapping[str, Any]) -> str:
    op = str(d.get("op", ""))
    if d.get("opcode") in ("call_function", "call_method"):
        op = op.rpartition(".")[2]
    return op


def _lines(n: Any, d: Mapping[str, Any]) -> Tuple[str, str, str]:
    """Text lines of a node box: op and shape, name, block reason."""
    if d.get("opcode") == "module":
        return _clip(str(n)), f"{d['count']} nodes", _clip("✕ " + d["reason"]) if d["cause"] else ""
    shape = d.get("new_shape") if d.get("new_shape") is not None else d.get("shape")
    first = _short_op(d) + (" " + fmt_shape(shape) if shape is not None else "")
    second = str(d.get("target")) if d.get("opcode") == "call_module" else str(n)
    third = _clip("✕ " + d["reason"]) if d.get("cause") else ""
    return _clip(first), _clip(second, _MAX_CHARS), third


def _node_json(n: Any, d: Mapping[str, Any]) -> Dict[str, Any]:
    out = {
        "name": str(n), "op": d.get("op", ""), "opcode": d.get("opcode", ""),
        "target": d.get("target", ""), "module": d.get("module", ""),
        "shape": fmt_shape(d.get("shape")), "dtype": d.get("dtype", ""),
        "layout": d.get("layout", ""), "groups": list(d.get("groups", ())),
        "params": ([] if d.get("opcode") == "module" else
                   [[t, dim, role, list(g)] for t, dim, role, g in d.get("params", ())]),
        "status": d.get("status", ""), "reason": d.get("reason", ""),
        "cause": bool(d.get("cause")),
    }
    if d.get("new_shape") is not None:
        out["new_shape"] = fmt_shape(d["new_shape"])
    if d.get("opcode") == "module":
        out["count"] = d["count"]
        out["nodes"] = [str(m) for m in d["nodes"]]
    return out


def _path(points: Sequence[Tuple[float, float]]) -> str:
    """SVG path through ``points`` (top to bottom) with vertical tangents."""
    (x0, y0), d = points[0], [f"M{points[0][0]:.0f} {points[0][1]:.0f}"]
    for x1, y1 in points[1:]:
        if abs(x1 - x0) < 0.5:
            d.append(f"L{x1:.0f} {y1:.0f}")
        else:
            m = (y0 + y1) / 2
            d.append(f"C{x0:.0f} {m:.0f} {x1:.0f} {m:.0f} {x1:.0f} {y1:.0f}")
        x0, y0 = x1, y1
    return "".join(d)


def _svg_view(index: int, G: nx.DiGraph, grown: Mapping[int, Any]) -> Tuple[str, Dict[str, Any]]:
    """One view: its SVG group and its JSON data."""
    texts = {n: _lines(n, d) for n, d in G.nodes(data=True)}
    width = {n: max(64.0, _CHAR_W * max(len(t) for t in texts[n]) + 24) for n in G}
    keep_top = lambda n: G.nodes[n].get("opcode") == "placeholder"  # noqa: E731
    pos, routes = layout_with_routes(G, width, gap=_GAP, keep_top=keep_top)
    n_layers = max((layer for _, layer in pos.values()), default=0) + 1
    row_h = [0.0] * n_layers
    for n, (_, layer) in pos.items():
        row_h[layer] = max(row_h[layer], _CAUSE_H if texts[n][2] else _NODE_H)
    top = [0.0] * n_layers
    for i in range(1, n_layers):
        top[i] = top[i - 1] + row_h[i - 1] + _LAYER_GAP
    xs = [(x - width[n] / 2, x + width[n] / 2) for n, (x, _) in pos.items()]
    xs += [(x, x) for route in routes.values() for x, _ in route]
    left = min((a for a, _ in xs), default=0.0)
    right = max((b for _, b in xs), default=0.0)
    shift = _MARGIN - left
    index_of = {n: i for i, n in enumerate(G)}
    box = {}
    for n, (x, layer) in pos.items():
        h = _CAUSE_H if texts[n][2] else _NODE_H
        box[n] = (x + shift, top[layer] + _MARGIN, width[n], h)

    parts: List[str] = [f'<g class="view" data-v="{index}"'
                        + ("" if index == 0 else ' style="display:none"') + ">"]
    edges = []
    for u, v in G.edges:
        xu, yu, _, hu = box[u]
        xv, yv, _, _ = box[v]
        y1, y2 = yu + hu, yv - 2
        if y2 <= y1:  # an edge against the order (collapsed views): go around
            edges.append(f'<path class="e back" d="M{xu:.0f} {y1:.0f} C{xu + 60:.0f} {y1 + 60:.0f} '
                         f'{xv + 60:.0f} {y2 - 60:.0f} {xv:.0f} {y2:.0f}"/>')
            continue
        points = [(xu, y1)]
        for x, layer in routes.get((u, v), ()):
            points += [(x + shift, top[layer] + _MARGIN), (x + shift, top[layer] + _MARGIN + row_h[layer])]
        points.append((xv, y2))
        edges.append(f'<path class="e" d="{_path(points)}"/>')
    parts.append('<g class="edges">' + "".join(edges) + "</g>")
    for n, d in G.nodes(data=True):
        x, y, w, h = box[n]
        groups = list(d.get("groups", ()))
        cls = ["n", "s-" + str(d.get("status", "none"))]
        if d.get("cause"):
            cls.append("cause")
        if d.get("opcode") == "module":
            cls.append("mod")
        fill = f"g{groups[0]}" if groups else "g-"
        l1, l2, l3 = texts[n]
        if any(g in grown for g in groups):
            cls.append("grown")
        s = [f'<g class="{" ".join(cls)}" data-i="{index_of[n]}" '
             f'transform="translate({x - w / 2:.0f},{y:.0f})">',
             f'<rect class="b {fill}" width="{w:.0f}" height="{h}" rx="5"/>']
        if len(groups) > 1:  # a strip with every group's colour on the left edge
            k = min(len(groups), 8)
            for j, g in enumerate(groups[:k]):
                s.append(f'<rect class="g{g}" x="1" y="{1 + j * (h - 2) / k:.1f}" width="6" '
                         f'height="{(h - 2) / k:.1f}"/>')
        s.append(f'<text x="{w / 2:.0f}" y="14">{_esc(l1)}</text>')
        s.append(f'<text class="t2" x="{w / 2:.0f}" y="28">{_esc(l2)}</text>')
        if l3:
            s.append(f'<text class="t3" x="{w / 2:.0f}" y="42">{_esc(l3)}</text>')
            s.append(f'<circle class="badge" cx="{w:.0f}" cy="0" r="8"/>'
                     f'<text class="badget" x="{w:.0f}" y="4">!</text>')
        s.append("</g>")
        parts.append("".join(s))
    parts.append("</g>")
    data = {"w": right - left + 2 * _MARGIN, "h": top[-1] + row_h[-1] + 2 * _MARGIN,
            "nodes": [_node_json(n, d) for n, d in G.nodes(data=True)]}
    return "".join(parts), data


def _legend(groups: Mapping[int, Mapping[str, Any]], plan: Optional[Mapping[int, Any]]) -> str:
    rows = ['<table class="legend"><thead><tr><th>group</th><th>size</th><th>status</th>'
            "<th>producers</th><th>reason</th></tr></thead><tbody>"]
    for gid, g in groups.items():
        size = str(g["size"])
        if plan is not None and gid in plan:
            size = f"{plan[gid][0]} → {plan[gid][1]}"
        prods = ", ".join(g["producers"]) or ("—" if g["members"] else "(no parameters)")
        reason = "; ".join(g["reasons"])
        rows.append(f'<tr data-g="{gid}" class="s-{_esc(g["status"])}"><td><span class="sw g{gid}">'
                    f"</span>{gid}</td><td>{_esc(size)}</td><td>{_esc(g['status'])}</td>"
                    f'<td title="{_esc(prods)}">{_esc(_clip(prods, 48))}</td>'
                    f'<td title="{_esc(reason)}">{_esc(_clip(reason, 60))}</td></tr>')
    rows.append("</tbody></table>")
    return "".join(rows)


_CSS = """
#__ROOT__{font:13px/1.35 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#222;
 display:flex;flex-direction:column;height:HEIGHT;border:1px solid #ccc;background:#fff;
 box-sizing:border-box}
#__ROOT__ header{padding:6px 10px;border-bottom:1px solid #ddd;background:#f7f7f7}
#__ROOT__ header h1{font-size:15px;margin:0 12px 0 0;display:inline}
#__ROOT__ header .help{color:#555;font-size:12px;margin-top:3px}
#__ROOT__ header select,#__ROOT__ header input,#__ROOT__ header button{font:inherit;margin-right:6px}
#__ROOT__ .main{display:flex;flex:1;min-height:0}
#__ROOT__ .canvas{flex:1;position:relative;min-width:0;overflow:hidden;cursor:grab;background:#fcfcfc}
#__ROOT__ svg{width:100%;height:100%;display:block;user-select:none}
#__ROOT__ aside{width:440px;overflow:auto;border-left:1px solid #ddd;padding:6px 8px;font-size:12px}
#__ROOT__ aside h2{font-size:13px;margin:8px 0 4px}
#__ROOT__ .e{fill:none;stroke:#9a9a9a;stroke-width:1.2;marker-end:url(#__ROOT__-arrow)}
#__ROOT__ .e.back{stroke-dasharray:3 3}
#__ROOT__ .n{cursor:pointer}
#__ROOT__ .n rect.b{stroke:#444;stroke-width:1}
#__ROOT__ .n.s-fixed rect.b{stroke-dasharray:5 3;stroke:#777}
#__ROOT__ .n.s-blocked rect.b{stroke:#d00000;stroke-width:2.5}
#__ROOT__ .n.cause rect.b{stroke-width:4}
#__ROOT__ .n.mod rect.b{stroke-width:2;rx:2}
#__ROOT__ .n.grown text:first-of-type{font-weight:700}
#__ROOT__ .n text{text-anchor:middle;font-size:11px;fill:#111}
#__ROOT__ .n text.t2{fill:#444;font-size:10.5px}
#__ROOT__ .n text.t3{fill:#b00000;font-size:10.5px;font-weight:600}
#__ROOT__ .badge{fill:#d00000}
#__ROOT__ .badget{fill:#fff!important;font-weight:700}
#__ROOT__ .g-{fill:#ffffff;background:#ffffff}
#__ROOT__ svg.hl .n{opacity:.18}
#__ROOT__ svg.hl .n.on{opacity:1}
#__ROOT__ svg.hl .n.on rect.b{stroke:#000;stroke-width:3}
#__ROOT__ svg.hl .e{opacity:.25}
#__ROOT__ .legend{border-collapse:collapse;width:100%;table-layout:fixed}
#__ROOT__ .legend th:nth-child(1){width:44px}#__ROOT__ .legend th:nth-child(2){width:64px}
#__ROOT__ .legend th:nth-child(3){width:62px}
#__ROOT__ .legend td{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
#__ROOT__ .legend td:nth-child(2){white-space:nowrap}
#__ROOT__ .legend td,#__ROOT__ .legend th{border-bottom:1px solid #eee;padding:2px 4px;text-align:left;
 vertical-align:top}
#__ROOT__ .legend tr{cursor:pointer}
#__ROOT__ .legend tr.sel{background:#fff3b0}
#__ROOT__ .legend tr.s-blocked td:nth-child(3){color:#d00000;font-weight:600}
#__ROOT__ .sw{display:inline-block;width:11px;height:11px;border:1px solid #555;margin-right:4px;
 vertical-align:-1px}
#__ROOT__ .key span{margin-right:10px;white-space:nowrap}
#__ROOT__ .key i{display:inline-block;width:18px;height:10px;border:1px solid #444;margin-right:3px;
 vertical-align:-1px;background:#cde}
#__ROOT__ .tip{position:absolute;pointer-events:none;background:#fffff2;border:1px solid #999;
 padding:4px 6px;font-size:12px;max-width:460px;display:none;box-shadow:0 1px 4px #0003;
 z-index:2}
#__ROOT__ .kv td{padding:1px 4px;vertical-align:top}
#__ROOT__ .kv td:first-child{color:#666;white-space:nowrap}
#__ROOT__ .why{color:#b00000;font-weight:600}
#__ROOT__ code{font-size:11px}
"""

_JS = r"""
(function(){
const root=document.getElementById("__ROOT__");
const data=JSON.parse(root.querySelector("script.fxg-data").textContent);
const svg=root.querySelector("svg"), vp=svg.querySelector(".vp");
const views=[...vp.querySelectorAll(".view")], canvas=root.querySelector(".canvas");
const tip=root.querySelector(".tip"), details=root.querySelector(".details");
const sel=root.querySelector("select.views"), search=root.querySelector("input.search");
let cur=0,k=1,tx=0,ty=0,pinned=null,hits=[],hitAt=-1;
const esc=s=>String(s).replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
function apply(){vp.setAttribute("transform","translate("+tx+","+ty+") scale("+k+")");}
function size(){const r=canvas.getBoundingClientRect();return [r.width||800,r.height||600];}
let lastMode;
function fit(mode){lastMode=mode;const v=data.views[cur],[W,H]=size();
 if(mode==="all"||v.h*Math.min(1,W/v.w)<=H*1.05){k=Math.min(W/v.w,H/v.h,1.5);}
 else{k=Math.min(W/v.w,1);} // tall graph: fit the width, start at the top
 tx=(W-v.w*k)/2; ty=mode==="all"||v.h*k<=H?(H-v.h*k)/2:0; apply();}
function centreOn(i){const g=views[cur].querySelector('.n[data-i="'+i+'"]');if(!g)return;
 const b=g.getBBox(),m=g.transform.baseVal.consolidate().matrix,[W,H]=size();
 k=Math.max(k,0.8);tx=W/2-(m.e+b.width/2)*k;ty=H/2-(m.f+b.height/2)*k;apply();}
function groupsHtml(gs){return gs.map(g=>{const G=data.groups[g];if(!G)return "";
 const sz=G.new_size!==undefined?G.size+" → "+G.new_size:G.size;
 return '<span class="sw g'+g+'"></span>'+g+" ("+sz+", "+esc(G.status)+")";}).join("<br>");}
function info(n){let r='<table class="kv">';const row=(a,b)=>{if(b!==""&&b!==undefined)r+="<tr><td>"+a+"</td><td>"+b+"</td></tr>";};
 row("node","<b>"+esc(n.name)+"</b>");row("op",esc(n.op)+" <span style='color:#888'>("+esc(n.opcode)+")</span>");
 if(n.target!==n.name)row("target","<code>"+esc(n.target)+"</code>");row("module",esc(n.module));
 row("shape",esc(n.shape)+(n.new_shape&&n.new_shape!==n.shape?" → <b>"+esc(n.new_shape)+"</b>":"")+" "+esc(n.dtype));
 row("layout","<code>"+esc(n.layout)+"</code>");row("groups",groupsHtml(n.groups));
 row("status",esc(n.status)+(n.cause?" <b class='why'>(this node blocks)</b>":""));
 if(n.reason)row("reason","<span class='why'>"+esc(n.reason)+"</span>");
 if(n.params.length)row("parameters",n.params.map(p=>"<code>"+esc(p[0])+"</code>["+p[1]+"] "+esc(p[2])+" → group "+p[3].join(",")).join("<br>"));
 if(n.count)row("contains",n.count+" nodes: "+esc(n.nodes.slice(0,40).join(", "))+(n.count>40?", …":""));
 return r+"</table>";}
function nodeOf(t){const g=t.closest&&t.closest(".n");return g?data.views[cur].nodes[+g.dataset.i]:null;}
function highlight(pred){svg.classList.toggle("hl",!!pred);
 views[cur].querySelectorAll(".n").forEach(g=>g.classList.toggle("on",!!pred&&pred(data.views[cur].nodes[+g.dataset.i])));}
function selectGroup(gid){root.querySelectorAll(".legend tr").forEach(t=>t.classList.toggle("sel",+t.dataset.g===gid));
 if(gid===null){highlight(null);return;}
 highlight(n=>n.groups.includes(gid));const G=data.groups[gid];
 const cnt=data.views[cur].nodes.filter(n=>n.groups.includes(gid)).length;
 details.innerHTML="<b>group "+gid+"</b>: "+cnt+" nodes, "+G.size+(G.new_size!==undefined?" → "+G.new_size:"")+" neurons, "+esc(G.status)+
  (G.reasons.length?"<br><span class='why'>"+esc(G.reasons.join("; "))+"</span>":"")+
  "<br>producers: "+esc(G.producers.join(", ")||"—")+(G.contraction?"<br>"+esc(G.contraction):"")+
  (G.uniform.length?"<br>uniform replication: "+esc(G.uniform.join("; ")):"");}
svg.addEventListener("mouseover",e=>{const n=nodeOf(e.target);if(!n){tip.style.display="none";return;}
 tip.innerHTML=info(n);tip.style.display="block";});
svg.addEventListener("mousemove",e=>{if(tip.style.display!=="block")return;const r=canvas.getBoundingClientRect();
 let x=e.clientX-r.left+14,y=e.clientY-r.top+14;if(x+tip.offsetWidth>r.width)x=Math.max(0,x-tip.offsetWidth-28);
 if(y+tip.offsetHeight>r.height)y=Math.max(0,y-tip.offsetHeight-28);tip.style.left=x+"px";tip.style.top=y+"px";});
svg.addEventListener("mouseleave",()=>{tip.style.display="none";});
let drag=null;
svg.addEventListener("pointerdown",e=>{drag={x:e.clientX,y:e.clientY,tx,ty,moved:false};canvas.style.cursor="grabbing";});
window.addEventListener("pointermove",e=>{if(!drag)return;const dx=e.clientX-drag.x,dy=e.clientY-drag.y;
 if(Math.abs(dx)+Math.abs(dy)>3)drag.moved=true;if(drag.moved){tx=drag.tx+dx;ty=drag.ty+dy;apply();}});
window.addEventListener("pointerup",e=>{if(!drag)return;const moved=drag.moved;drag=null;canvas.style.cursor="";
 if(moved||!svg.contains(e.target))return;const n=nodeOf(e.target);
 if(!n){highlight(null);selectGroup(null);details.innerHTML="Click a node or a group.";return;}
 details.innerHTML=info(n);highlight(m=>m===n||m.groups.some(g=>n.groups.includes(g)));});
svg.addEventListener("wheel",e=>{e.preventDefault();const r=canvas.getBoundingClientRect();
 const px=e.clientX-r.left,py=e.clientY-r.top,f=Math.exp(-e.deltaY*0.0015);
 tx=px-(px-tx)*f;ty=py-(py-ty)*f;k*=f;apply();},{passive:false});
svg.addEventListener("dblclick",()=>fit("all"));
root.querySelectorAll(".legend tbody tr").forEach(t=>t.addEventListener("click",()=>{
 const g=+t.dataset.g;selectGroup(t.classList.contains("sel")?null:g);}));
root.querySelector("button.fit").addEventListener("click",()=>fit("all"));
root.querySelector("button.fitw").addEventListener("click",()=>fit("width"));
sel.addEventListener("change",()=>{views[cur].style.display="none";cur=+sel.value;
 views[cur].style.display="";highlight(null);fit();});
search.addEventListener("input",()=>{const q=search.value.trim().toLowerCase();hitAt=-1;
 if(!q){hits=[];highlight(null);return;}
 hits=data.views[cur].nodes.map((n,i)=>[n,i]).filter(([n])=>(n.name+" "+n.module+" "+n.op+" "+n.target).toLowerCase().includes(q)).map(([,i])=>i);
 highlight(n=>(n.name+" "+n.module+" "+n.op+" "+n.target).toLowerCase().includes(q));});
search.addEventListener("keydown",e=>{if(e.key==="Enter"&&hits.length){hitAt=(hitAt+1)%hits.length;centreOn(hits[hitAt]);
 details.innerHTML="match "+(hitAt+1)+" of "+hits.length+"<br>"+info(data.views[cur].nodes[hits[hitAt]]);}});
root.tabIndex=0;root.addEventListener("keydown",e=>{if(e.target===search)return;
 if(e.key==="f")fit("all");else if(e.key==="w")fit("width");else if(e.key==="Escape"){highlight(null);selectGroup(null);}});
window.addEventListener("resize",()=>fit(lastMode));
const hv=(location.hash||"").match(/view=(\d+)/);
if(hv&&views[+hv[1]]){views[0].style.display="none";cur=+hv[1];views[cur].style.display="";sel.value=cur;}
fit(/fit=all/.test(location.hash||"")?"all":undefined);root.dataset.ready="1";
})();
"""

_HELP = ("Wheel: zoom · drag: pan · double-click or <b>F</b>: fit all · <b>W</b>: fit width · "
         "hover a node for details, click it to pin them and highlight its groups · click a "
         "legend row to highlight a group · search by name, module or op (Enter jumps to the "
         "next match) · a big graph reads best with its modules collapsed (view menu; "
         "<code>#view=1</code> in the address opens that view).")


def render(views: Sequence[Tuple[str, nx.DiGraph]], groups: Mapping[int, Mapping[str, Any]],
           colours: Mapping[int, str], *, title: str, plan: Optional[Mapping[int, Any]] = None,
           embed: bool = False) -> str:
    """The HTML of a page (or, with ``embed``, a fragment) showing ``views``.

    Parameters
    ----------
    views : sequence of (name, DiGraph)
        Graphs annotated as by :func:`fxgrow.viz.to_networkx`; the first
        is shown first, the others are offered in a menu.
    groups : mapping group id -> dict
        ``G.graph["groups"]`` of the full graph.
    colours : mapping group id -> colour
    title : str
    plan : mapping group id -> (old, new), optional
    embed : bool
        A ``<div>`` fragment with a fixed height (Jupyter) instead of a page.
    """
    uid = "fxg-" + uuid.uuid4().hex[:8]
    grown = dict(plan or {})
    svgs, datas = [], []
    for i, (_, G) in enumerate(views):
        s, d = _svg_view(i, G, grown)
        svgs.append(s)
        datas.append(d)
    group_json = {str(g): {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in info.items()}}
                  for g, info in groups.items()}
    blob = json.dumps({"views": datas, "groups": group_json}, separators=(",", ":"))
    blob = blob.replace("</", "<\\/")
    css = _CSS.replace("HEIGHT", "640px" if embed else "100vh")
    css += "".join(f"#__ROOT__ .g{g}{{fill:{c};background:{c}}}" for g, c in colours.items())
    css = css.replace("__ROOT__", uid)
    n_status = {s: sum(1 for g in groups.values() if g["status"] == s)
                for s in (GROWABLE, FIXED, BLOCKED)}
    n_nodes = views[0][1].number_of_nodes() if views else 0
    options = "".join(f'<option value="{i}">{_esc(name)} ({G.number_of_nodes()} nodes)</option>'
                      for i, (name, G) in enumerate(views))
    key = ('<div class="key"><span><i></i>fill: the node\'s group (multi-group nodes: a strip '
           'on the left)</span><span><i style="background:#d9d9d9;border-style:dashed"></i>grey, '
           'dashed: fixed</span><span><i style="border:2.5px solid #d00000"></i>red: blocked'
           '</span><span><i style="border:4px solid #d00000"></i>thick red + ! : the node '
           'that blocks</span><span><i style="background:#fff"></i>white: no neuron dims</span>'
           + ("<span><b>bold</b> shape: grown (new shape)</span>" if plan else "") + "</div>")
    body = (
        f'<div id="{uid}" class="fxgrow-graph">'
        f"<style>{css}</style>"
        f"<header><h1>{_esc(title)}</h1>"
        f"<span>{n_nodes} nodes · {len(groups)} groups: {n_status['growable']} growable, "
        f"{n_status['fixed']} fixed, {n_status['blocked']} blocked</span> &nbsp; "
        f'<select class="views" title="collapse modules">{options}</select>'
        f'<input class="search" type="search" placeholder="find node / module / op">'
        f'<button class="fit">fit all</button><button class="fitw">fit width</button>'
        f'<div class="help">{_HELP}</div>{key}</header>'
        f'<div class="main"><div class="canvas"><div class="tip"></div>'
        f'<svg xmlns="http://www.w3.org/2000/svg"><defs><marker id="{uid}-arrow" '
        f'viewBox="0 0 8 8" refX="7" refY="4" markerWidth="6" markerHeight="6" '
        f'orient="auto-start-reverse"><path d="M0 0L8 4L0 8z" fill="#9a9a9a"/></marker></defs>'
        f'<g class="vp">{"".join(svgs)}</g></svg></div>'
        f'<aside><h2>Selection</h2><div class="details">Click a node or a group.</div>'
        f"<h2>Groups</h2>{_legend(groups, plan)}</aside></div>"
        f'<script type="application/json" class="fxg-data">{blob}</script>'
        f"<script>{_JS.replace('__ROOT__', uid)}</script></div>"
    )
    if embed:
        return body
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>html,body{{margin:0;height:100%}}</style>"
            f"</head><body>{body}</body></html>\n")
