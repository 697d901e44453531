"""The network layer: the one HTTP client, the public-address guard, verified downloads and safe archive extraction."""
