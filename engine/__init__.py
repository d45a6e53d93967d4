"""The vLLM engine side: model preparation, engine specs, engine processes."""
