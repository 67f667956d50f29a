"""Running several real node processes on one machine: the demo, tests and the netns testbed."""
