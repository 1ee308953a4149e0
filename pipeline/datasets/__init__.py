"""Where datasets come from: official files found in the data folders or downloaded and verified
(files), the official sources and their decoders (official), image folders (folders).
pipeline.data prepares any of them into arrays."""
