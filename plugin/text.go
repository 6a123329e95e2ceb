package credentials

import (
	"net"
	"regexp"
)

// keyHint shows enough of an API key for a person to tell keys apart: its
// prefix up to the last '_' or '-' among the first 12 characters (such as
// "sk_live_") and its last 4 characters. Short keys get only a length.
func keyHint(key string) string {
	if len(key) < 16 {
		return "…" // too short to show any of it safely
	}
	prefix := ""
	for i := 0; i < 12 && i < len(key)-8; i++ {
		if key[i] == '_' || key[i] == '-' {
			prefix = key[:i+1]
		}
	}
	return prefix + "…" + key[len(key)-4:]
}

var hostnamePattern = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	return len(h) <= 253 && hostnamePattern.MatchString(h)
}
