"""The image crawler: the crawl itself, its frontier, robots.txt rules and link extraction."""
