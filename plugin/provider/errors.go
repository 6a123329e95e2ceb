package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"golang.org/x/oauth2"

	"github.com/clankteam/credentials/internal/egress"
)

// Kind is what a provider's failure means for the grant.
type Kind int

const (
	// Transient: the provider or the network failed; retry later.
	Transient Kind = iota
	// GrantDead: the grant is gone (invalid_grant and its kin); a person
	// must reconnect.
	GrantDead
	// Refused: the provider refused the request for another reason (the
	// app's client credentials, scopes, a malformed request): a person
	// must look, but the grant may still be alive.
	Refused
)

// Error is a classified failure of a provider call. Msg is for people and
// holds no secret: the provider's error code and description scrubbed of
// what was sent, or the HTTP status, never the body.
type Error struct {
	Kind   Kind
	Code   string
	Status int
	Msg    string
	cause  error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.cause }

// grantDeadCodes mean the grant is dead: RFC 6749's invalid_grant and the
// providers' own names for it.
var grantDeadCodes = map[string]bool{
	"invalid_grant":         true,
	"invalid_refresh_token": true, // Slack
	"bad_refresh_token":     true, // GitHub
	"token_revoked":         true, // Slack
	"token_expired":         true, // Slack
	"expired_token":         true,
	"token_inactive":        true, // Ory (fosite, Hydra): revoked or reused
	"bad_verification_code": true, // GitHub, authorization codes
	"invalid_code":          true, // Slack, authorization codes
}

func isTransientCode(code string) bool {
	switch code {
	case "temporarily_unavailable", "server_error", "slow_down", "ratelimited", "internal_error", "service_unavailable":
		return true
	}
	return false
}

// classify turns an error of x/oauth2 into an *Error. sent are the secrets
// sent in the failed request: they are scrubbed from the provider's text.
func classify(err error, what string, sent ...string) *Error {
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		code, desc := re.ErrorCode, re.ErrorDescription
		if code == "" {
			// x/oauth2/jwt leaves the body unparsed.
			var body struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
			}
			if json.Unmarshal(re.Body, &body) == nil {
				code, desc = body.Error, body.Description
			}
		}
		return statusError(what, status, code, desc, err, sent...)
	}
	e := &Error{Kind: Transient, cause: err}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		e.Msg = what + ": the provider did not answer in time"
	case errors.Is(err, context.Canceled):
		e.Msg = what + ": cancelled"
	case transportFailure(err) != nil:
		// The egress package words these for every edge alike: the
		// raw error names the resolver's address and the whole URL.
		ue := transportFailure(err)
		target, perr := url.Parse(ue.URL)
		if perr != nil {
			e.Msg = what + ": the provider could not be reached"
			break
		}
		msg := egress.SendError(context.Background(), target, 0, err)
		if msg.Permanent {
			e.Kind = Refused
		}
		e.Msg = what + ": " + msg.Msg
	default:
		// x/oauth2's other errors (an unparsable answer) name no
		// secret; scrubbed all the same.
		e.Msg = fmt.Sprintf("%s: %s", what, Clip(Scrub(err.Error(), sent), 300))
	}
	return e
}

// transportFailure is the *url.Error of a request that got no answer
// (nothing to resolve, nothing listening, a refused target), or nil.
func transportFailure(err error) *url.Error {
	var ue *url.Error
	var dnsErr *net.DNSError
	var opErr *net.OpError
	if errors.As(err, &ue) && (errors.As(err, &dnsErr) || errors.As(err, &opErr) || errors.Is(err, egress.ErrPrivateTarget)) {
		return ue
	}
	return nil
}

// statusError classifies an answer with an HTTP status and an OAuth error
// code.
func statusError(what string, status int, code, desc string, cause error, sent ...string) *Error {
	// Scrubbed before clipping, so that no part of a secret is left.
	desc = Clip(Scrub(desc, sent), 200)
	e := &Error{Code: Clip(Scrub(code, sent), 80), Status: status, cause: cause}
	switch {
	case grantDeadCodes[code]:
		e.Kind = GrantDead
	case isTransientCode(code) || status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout:
		e.Kind = Transient
	default:
		e.Kind = Refused
	}
	e.Msg = fmt.Sprintf("%s: the provider answered HTTP %d", what, status)
	if e.Code != "" {
		e.Msg += " " + e.Code
	}
	if desc != "" {
		e.Msg += " (" + desc + ")"
	}
	return e
}

// Scrub removes from a provider's text every secret that was sent to it
// (a refresh or access token, the client secret, an authorization code, a
// PKCE verifier), so that a provider quoting its request back cannot put a
// secret into a stored error, a response or the log. Longer secrets go
// first, so that one containing another is removed whole; URL-encoded
// copies go too.
func Scrub(text string, sent []string) string {
	sorted := slices.Clone(sent)
	slices.SortFunc(sorted, func(a, b string) int { return len(b) - len(a) })
	for _, secret := range sorted {
		if secret == "" {
			continue
		}
		text = strings.ReplaceAll(text, secret, "[redacted]")
		if q := url.QueryEscape(secret); q != secret {
			text = strings.ReplaceAll(text, q, "[redacted]")
		}
	}
	return text
}

// Clip shortens s to n bytes, marking the cut.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
