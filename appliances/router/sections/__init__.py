"""Sections of the router document that belong to one service each.

Every module holds the section's models (field rules) and a ``verify(doc)``
generator for the rules that relate the section to the rest of the document.
The root model (:mod:`appliances.router.document`) only assembles them.
"""
