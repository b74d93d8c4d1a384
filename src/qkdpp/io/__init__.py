"""Raw detection events: event dtype, capture readers/writers, adapters, simulated link."""
