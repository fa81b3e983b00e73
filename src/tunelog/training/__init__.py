"""What training needs, shared by the built-in trainer, the probe and the callback: the model and where
it comes from (`model`, `model_source`, `hub`, `adapters`), data (`data`) and what it was
(`provenance`), one optimizer step (`step`), memory and devices, plots, generation (samples before
and after), and the facts a spec's rules read off the disk (`facts`). Modules are imported on use:
torch and transformers load only where a module needs them."""
