// Package e2e holds the end-to-end tests: they build the real agentkeys binary once,
// run it as separate processes (server and CLI) on loopback with their own
// AGENTKEYS_HOME, and check behaviour only through what a user or operator sees:
// HTTP answers, exit codes, output lines and files in the data dir. Every byte the
// processes print is kept and checked for the secrets the tests planted.
package e2e
