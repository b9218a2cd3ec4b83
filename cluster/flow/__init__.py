"""The flow language: the document model and schema, validation and analysis, templates, loading,
hashing and the static checks of examples. Pure: never imports the store, Redis or the engine."""
