"""The datasets: ICRL games, math problems, code tasks, ARC questions and prompt sets, each read offline from what a package registry ships (or from the hubs, for users with the network)."""
