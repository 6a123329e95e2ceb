package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"
)

// Fields of a sealed-mode call and its answer.
const (
	// FieldEdgeKey asks for the injection sealed to this edge key id
	// instead of a call to the service.
	FieldEdgeKey = "edge_key"
	// FieldSealed is the sealed EdgeInjection in the answer.
	FieldSealed = "sealed_injection"
)

// SendError turns a transport failure into what the caller is told: never
// the raw error, whose URL may carry a query-injected secret.
func SendError(ctx context.Context, target *url.URL, timeout time.Duration, err error) *Error {
	switch {
	case errors.Is(err, ErrPrivateTarget):
		return &Error{Status: http.StatusBadGateway, Permanent: true, Msg: fmt.Sprintf(
			"refused to connect to %s: it is a loopback, private or link-local address (or plain http to a public one), which only the operator's private targets (%s) may be",
			target.Hostname(), PrivateTargetsEnv)}
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &Error{Status: http.StatusGatewayTimeout, Permanent: true, Msg: fmt.Sprintf(
			"%s did not answer within broker_timeout (%s)", target.Host, timeout)}
	case errors.Is(err, context.Canceled):
		return &Error{Status: http.StatusBadGateway, Msg: "the call was cancelled"}
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return &Error{Status: http.StatusBadGateway, Msg: fmt.Sprintf("cannot resolve %s", target.Hostname())}
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return &Error{Status: http.StatusBadGateway, Msg: fmt.Sprintf("cannot connect to %s", target.Host)}
	}
	return &Error{Status: http.StatusBadGateway, Msg: fmt.Sprintf("calling %s failed", target.Host)}
}

// TooLarge is a body over the mount's broker_max_body.
func TooLarge(what string, max int64) *Error {
	status := http.StatusRequestEntityTooLarge
	if what == "answer" {
		status = http.StatusBadGateway
	}
	return &Error{Status: status, Permanent: true, Msg: fmt.Sprintf(
		"the %s body is larger than broker_max_body (%d bytes): send or ask for less, or raise broker_max_body in config", what, max)}
}
