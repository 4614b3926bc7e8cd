"""In-process cluster tests: several nodes built by the production factory in one process, wired by iosim pumps, under a Clock."""
