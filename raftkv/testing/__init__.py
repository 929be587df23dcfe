"""Tools that test a running raftkv cluster from the outside (history checking for the chaos suite)."""
