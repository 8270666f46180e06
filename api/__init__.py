"""The request API (Flask). It arrives with the service issue; for now it holds nothing.

It will import :mod:`delivery.selection` to refuse bad queries at submit, and
never the reading or writing code of :mod:`transformers`.
"""
