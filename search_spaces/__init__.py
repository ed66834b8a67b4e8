"""Search spaces, presets and training schedules shipped as data (YAML files beside this one)."""
