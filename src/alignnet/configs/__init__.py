"""YAML training presets (package data); see alignnet.train.config."""
