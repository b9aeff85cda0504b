"""The learners, second floor beside :mod:`operators`: the protocol, the models, and their bundles.

Every learner follows :class:`models.base.OnlineModel` (``predict_one``,
``learn_one``); :mod:`models.registry` names them, so that choosing models
is one setting; :mod:`models.bundle` is the pure part of model bundles. Like
:mod:`operators`, this package is pure: no engine, no I/O client, no metrics
(the ``pure`` import contract).
"""
