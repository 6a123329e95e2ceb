// Package hardening holds the process-level protections that the plugin and
// the portal apply at start, before they touch any secret.
package hardening

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// DisableCoreDumps keeps secrets held in memory out of core files: the core
// size limit is set to zero and the process is marked not dumpable, which
// also stops other processes of the same user from reading its memory
// through /proc or ptrace. Failures are ignored on purpose: the protections
// are best effort and must not stop the service from starting.
func DisableCoreDumps() {
	_ = unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0})
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
}

// ExitWhenOrphaned ends the process once its parent is gone: a plugin whose
// Vault was killed (SIGKILL, OOM) would otherwise live on, reparented,
// holding decrypted secrets in memory. The parent is polled rather than
// watched with PR_SET_PDEATHSIG, which fires when the parent's forking
// thread exits, not the parent: Go's threads come and go.
func ExitWhenOrphaned(every time.Duration, logf func(format string, args ...any)) {
	parent := os.Getppid()
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for range t.C {
			if os.Getppid() != parent {
				logf("the parent process (%d) is gone: exiting", parent)
				os.Exit(2)
			}
		}
	}()
}
