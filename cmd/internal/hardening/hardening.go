// Package hardening holds the process-level protections that the plugin and
// the portal apply at start, before they touch any secret.
package hardening

import "golang.org/x/sys/unix"

// DisableCoreDumps keeps secrets held in memory out of core files: the core
// size limit is set to zero and the process is marked not dumpable, which
// also stops other processes of the same user from reading its memory
// through /proc or ptrace. Failures are ignored on purpose: the protections
// are best effort and must not stop the service from starting.
func DisableCoreDumps() {
	_ = unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0})
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
}
