package credentials

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

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

// brokerCall sends r to the service with c's credential injected and returns
// the answer, bounded by the mount's broker_timeout and broker_max_body.
// This is the buffered Vault path; the edge streams the same steps.
// Errors are *brokerError (caller-facing, secret-free) or wrapped failures.
func (b *backend) brokerCall(ctx context.Context, s logical.Storage, cfg *mountConfig, svc *service, c *credential, r brokerRequest) (*brokerResponse, error) {
	esvc := egressService(svc)
	target, err := egress.ResolveTarget(esvc, r.path)
	if err != nil {
		return nil, err
	}
	inj := injectionFor(svc, c.Type)
	header, err := egress.OutboundHeaders(r.header, inj, "")
	if err != nil {
		return nil, err
	}
	if int64(len(r.body)) > cfg.BrokerMaxBody {
		return nil, tooLarge(cfg.BrokerMaxBody)
	}
	material, err := b.credentialMaterial(ctx, s, svc, c)
	if err != nil {
		return nil, err
	}
	defer material.Zero()
	scrubber := egress.ScrubberFor(inj, material)
	defer scrubber.Zero()

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
	req.Header.Set("Accept-Encoding", egress.AcceptEncoding)
	if err := egress.Inject(req, inj, material); err != nil {
		return nil, err
	}
	resp, err := b.egress.brokerClient().Do(req)
	if err != nil {
		return nil, egress.SendError(ctx, target, cfg.BrokerTimeout, err)
	}
	defer resp.Body.Close()

	decoded, err := egress.DecodeBody(resp)
	if err != nil {
		return nil, err
	}
	maxAnswer := cfg.BrokerMaxBody
	if r.maxAnswer > 0 && r.maxAnswer < maxAnswer {
		maxAnswer = r.maxAnswer
	}
	var out bytes.Buffer
	sw := scrubber.NewWriter(&out)
	n, err := io.Copy(sw, io.LimitReader(decoded, maxAnswer+1))
	_ = sw.Close()
	if err != nil {
		clear(out.Bytes())
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, &brokerError{Status: http.StatusGatewayTimeout, Permanent: true, Msg: target.Host + " did not finish its answer within broker_timeout (" + cfg.BrokerTimeout.String() + ")"}
		}
		return nil, &brokerError{Status: http.StatusBadGateway, Msg: "reading the answer of " + target.Host + " failed"}
	}
	if n > maxAnswer {
		clear(out.Bytes())
		if maxAnswer < cfg.BrokerMaxBody {
			return nil, &brokerError{Status: http.StatusBadGateway, Permanent: true, Msg: fmt.Sprintf(
				"the answer is larger than the Vault path carries (%d bytes): call through the portal's edge (/broker/...), which streams it", maxAnswer)}
		}
		return nil, egress.TooLarge("answer", cfg.BrokerMaxBody)
	}

	br := &brokerResponse{status: resp.StatusCode, header: egress.AnswerHeaders(resp.Header, scrubber), body: out.Bytes()}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		if loc := br.header.Get("Location"); loc != "" {
			if ref, err := url.Parse(loc); err == nil {
				br.redirectPath = egress.BrokerPath(esvc, target.ResolveReference(ref))
			}
		}
	}
	return br, nil
}

// zeroCredentialFile zeroes what of c can be zeroed: the file's bytes.
// Strings (API keys, passwords, tokens) are immutable in Go and are left to
// the garbage collector; the README says so.
func zeroCredentialFile(c *credential) {
	if c != nil {
		clear(c.File)
	}
}
