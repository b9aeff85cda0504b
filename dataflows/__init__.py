"""The dataflow, fourth floor: the Bytewax wrappers, the wiring, the root settings, recovery and bundles.

``python -m bytewax.run dataflows.forecast`` runs it. The pure operators are
wrapped for Bytewax in :mod:`dataflows.ops` and wired in
:mod:`dataflows.forecast`; :mod:`dataflows.settings` composes every
component's config into the root :class:`~dataflows.settings.Settings`. Only
the apps (:mod:`ticklet`) are above it.
"""
