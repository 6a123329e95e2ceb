package credentials

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"
)

// brokerRequest is one call an agent (or verify) asks the broker to make.
type brokerRequest struct {
	method string
	// path is relative to the service's first base URL, or absolute.
	path   string
	header map[string][]string
	body   []byte
}

// brokerResponse is the service's answer with the credential scrubbed out.
type brokerResponse struct {
	status int
	header http.Header
	body   []byte
	// redirectPath is a redirect's target relative to the service's first
	// base URL, when it points there, so the portal can keep the caller on
	// the broker.
	redirectPath string
}

// brokerCall sends r to the service with c's credential injected and returns
// the answer, bounded by the mount's broker_timeout and broker_max_body.
// Errors are *brokerError (caller-facing, secret-free) or wrapped failures.
func (b *backend) brokerCall(ctx context.Context, s logical.Storage, cfg *mountConfig, svc *service, c *credential, r brokerRequest) (*brokerResponse, error) {
	target, err := resolveTarget(svc, r.path)
	if err != nil {
		return nil, err
	}
	inj := injectionFor(svc, c.Type)
	header, err := outboundHeaders(r.header, inj)
	if err != nil {
		return nil, err
	}
	if int64(len(r.body)) > cfg.BrokerMaxBody {
		return nil, &brokerError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf(
			"request body is larger than broker_max_body (%d bytes)", cfg.BrokerMaxBody)}
	}
	material, err := b.credentialMaterial(ctx, s, svc, c)
	if err != nil {
		return nil, err
	}
	forms := scrubForms(inj, material)
	defer zeroForms(forms)

	ctx, cancel := context.WithTimeout(ctx, cfg.BrokerTimeout)
	defer cancel()
	var body io.Reader
	if len(r.body) > 0 {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, target.String(), body)
	if err != nil {
		return nil, badRequest("cannot build the request: %s", r.method)
	}
	req.Header = header
	if err := inject(req, inj, material); err != nil {
		return nil, err
	}
	resp, err := b.brokerHTTP.client(svc.AllowPrivateTargets).Do(req)
	if err != nil {
		return nil, classifySendError(ctx, target, cfg.BrokerTimeout, err)
	}
	defer resp.Body.Close()

	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		// Go's transport decodes the gzip it asked for; anything else
		// cannot be searched for the secret, so it is not passed on.
		return nil, &brokerError{status: http.StatusBadGateway, msg: fmt.Sprintf(
			"%s answered with a %s-encoded body, which the broker cannot check for the credential", target.Host, truncate(ce, 32))}
	}
	out, err := io.ReadAll(io.LimitReader(resp.Body, cfg.BrokerMaxBody+1))
	if err != nil {
		clear(out)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, &brokerError{status: http.StatusGatewayTimeout, msg: fmt.Sprintf(
				"%s did not finish its answer within broker_timeout (%s)", target.Host, cfg.BrokerTimeout)}
		}
		return nil, &brokerError{status: http.StatusBadGateway, msg: fmt.Sprintf("reading the answer of %s failed", target.Host)}
	}
	if int64(len(out)) > cfg.BrokerMaxBody {
		clear(out)
		return nil, &brokerError{status: http.StatusBadGateway, msg: fmt.Sprintf(
			"the answer of %s is larger than broker_max_body (%d bytes) and was cut off: ask for less, or raise broker_max_body in config",
			target.Host, cfg.BrokerMaxBody)}
	}
	out, _ = scrub(out, forms)

	header = make(http.Header, len(resp.Header))
	for k, vs := range resp.Header {
		for _, v := range vs {
			header.Add(k, scrubString(v, forms))
		}
	}
	dropHopByHop(header)
	// The body may have changed length; whoever writes it sets its own.
	header.Del("Content-Length")

	br := &brokerResponse{status: resp.StatusCode, header: header, body: out}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		br.redirectPath = redirectPath(svc, target, header.Get("Location"))
	}
	return br, nil
}

// redirectPath returns loc, resolved against target, relative to the
// service's first base URL; empty when it points elsewhere.
func redirectPath(svc *service, target *url.URL, loc string) string {
	if loc == "" {
		return ""
	}
	ref, err := url.Parse(loc)
	if err != nil {
		return ""
	}
	abs := target.ResolveReference(ref)
	base, err := url.Parse(svc.BaseURLs[0])
	if err != nil || strings.HasPrefix(base.Hostname(), "*.") {
		return ""
	}
	if !strings.EqualFold(abs.Scheme, base.Scheme) || !strings.EqualFold(abs.Hostname(), base.Hostname()) ||
		effectivePort(abs) != effectivePort(base) {
		return ""
	}
	bp := strings.TrimSuffix(base.EscapedPath(), "/")
	p := abs.EscapedPath()
	if bp != "" && p != bp && !strings.HasPrefix(p, bp+"/") {
		return ""
	}
	rel := strings.TrimPrefix(p, bp)
	if rel == "" {
		rel = "/"
	}
	if abs.RawQuery != "" {
		rel += "?" + abs.RawQuery
	}
	return rel
}

// zeroCredentialFile zeroes what of c can be zeroed: the file's bytes.
// Strings (API keys, passwords, tokens) are immutable in Go and are left to
// the garbage collector; the README says so.
func zeroCredentialFile(c *credential) {
	if c != nil {
		clear(c.File)
	}
}

// brokerResult turns a broker error into the response Vault sends: the
// caller's mistakes as 400 with a message, other refusals and upstream
// failures with their own status (413, 502, 504), other errors as they are.
func brokerResult(err error) (*logical.Response, error) {
	var be *brokerError
	if !errors.As(err, &be) {
		return nil, err
	}
	if be.status == http.StatusBadRequest {
		return logical.ErrorResponse(be.msg), nil
	}
	return nil, logical.CodedError(be.status, be.msg)
}
