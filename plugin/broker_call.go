package credentials

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/egress"
)

// brokerRequest is one call an agent (or verify) asks the broker to make.
type brokerRequest struct {
	method string
	// path is relative to the service's first base URL, or absolute.
	path   string
	header http.Header
	body   []byte
	// maxAnswer, when set below broker_max_body, bounds the answer the
	// Vault path buffers.
	maxAnswer int64
}

// brokerResponse is the service's answer with the credential scrubbed out.
type brokerResponse struct {
	status int
	header http.Header
	body   []byte
	// redirectPath is a redirect's target relative to the service's first
	// base URL, when it points there, so the caller can stay on the broker.
	redirectPath string
}

// egressService is what the egress package needs of svc.
func egressService(svc *service) egress.Service {
	return egress.Service{Name: svc.Name, BaseURLs: svc.BaseURLs}
}

// grantFor is what a call with c may use, as the egress pipeline's steps
// take it; material is nil until the secret is needed (Prepare).
func (b *backend) grantFor(cfg *mountConfig, svc *service, c *credential) *egress.Grant {
	return &egress.Grant{
		Cred:           c.Name,
		Service:        egressService(svc),
		Injection:      injectionFor(svc, c.Type),
		PrivateTargets: b.egress.guard.String(),
		TimeoutSeconds: int64(cfg.BrokerTimeout / time.Second),
		MaxBody:        cfg.BrokerMaxBody,
	}
}

// brokerCall sends r to the service with c's credential injected and returns
// the answer, bounded by the mount's broker_timeout and broker_max_body.
// This is the buffered Vault path; the edge streams the same steps
// (egress.Check, Prepare, Send), differing only in how it reads the answer.
// Errors are *userError (caller-facing, secret-free) or wrapped failures.
func (b *backend) brokerCall(ctx context.Context, s logical.Storage, cfg *mountConfig, svc *service, c *credential, r brokerRequest) (*brokerResponse, error) {
	grant := b.grantFor(cfg, svc, c)
	var body io.Reader
	if len(r.body) > 0 {
		body = bytes.NewReader(r.body)
	}
	checked, err := egress.Check(grant, egress.Request{
		Method: r.method, Target: r.path, Header: r.header, Body: body, ContentLength: int64(len(r.body)),
	})
	if err != nil {
		return nil, err
	}
	material, err := b.credentialMaterial(ctx, s, svc, c)
	if err != nil {
		return nil, err
	}
	defer material.Zero()

	ctx, cancel := context.WithTimeout(ctx, cfg.BrokerTimeout)
	defer cancel()
	out, err := checked.Prepare(ctx, material)
	if err != nil {
		return nil, err
	}
	answer, err := out.Send(b.egress.brokerClient(), cfg.BrokerTimeout)
	if err != nil {
		out.Scrubber.Zero()
		return nil, err
	}
	defer answer.Close()

	maxAnswer := cfg.BrokerMaxBody
	if r.maxAnswer > 0 && r.maxAnswer < maxAnswer {
		maxAnswer = r.maxAnswer
	}
	whole, err := answer.ReadAll(maxAnswer)
	switch {
	case errors.Is(err, egress.ErrAnswerOver):
		clear(whole)
		if maxAnswer < cfg.BrokerMaxBody {
			return nil, &userError{Status: http.StatusBadGateway, Permanent: true, Msg: fmt.Sprintf(
				"the answer is larger than the Vault path carries (%d bytes): call through the portal's edge (/broker/...), which streams it", maxAnswer)}
		}
		return nil, egress.TooLarge("answer", cfg.BrokerMaxBody)
	case err != nil:
		return nil, answer.ReadError(err, cfg.BrokerTimeout)
	}
	return &brokerResponse{status: answer.Status, header: answer.Header, body: whole, redirectPath: answer.RedirectPath()}, nil
}

// zeroCredentialFile zeroes what of c can be zeroed: the file's bytes.
// Strings (API keys, passwords, tokens) are immutable in Go and are left to
// the garbage collector; the README says so.
func zeroCredentialFile(c *credential) {
	if c != nil {
		clear(c.File)
	}
}
