"""The intermediate representation: what the analysis reasons with and hands on.

No ``torch.fx`` here: layouts (:mod:`.layout`), the space table that unifies and
refines them (:mod:`.spaces`), the abstract values nodes get (:mod:`.values`),
roles and statuses (:mod:`.roles`), the records of the result (:mod:`.groups`)
and literal rewrites as data (:mod:`.rewrites`).
"""
