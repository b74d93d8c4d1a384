"""Device profiles shipped with qkdpp (TOML package data); see hardware/README.md."""
