"""Pipelines: the registry of which stages a job type runs, and the stage functions.

``registry`` declares the pipelines; each other module here is one stage
(``extract``, ``ocr``, ``chunk``, ``index``, ``entities``) or what stages share
(``checkpoints``: writing per-item results; ``entity_finder``: the patterns the
``entities`` stage looks for). To add a stage, write a function
``stage(ctx: StageContext) -> None`` in a module here and name it in
:func:`processing.pipeline.registry.register`.
"""
