"""The end-to-end engine: capture → timing → sifting → blocks → reconciliation → key store."""
