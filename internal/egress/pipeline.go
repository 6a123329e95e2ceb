package egress

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// One call through the broker, in the steps both data paths take: the
// engine's Vault path, which buffers, and the portal's edge, which streams.
//
//  1. Authorize: Vault decides with the caller's own token. The engine is
//     reached only once Vault's ACL let the request in, and it reads the
//     credential from storage; the edge asks the engine with the agent's
//     token and opens the engine's sealed answer. Either way the result is a
//     Grant.
//  2. Check (no secret needed): the target is under the service's
//     base_urls and in normal form, the body within the limit, the
//     caller's headers allowed.
//  3. Prepare: the outgoing request, with the credential injected and the
//     scrubber for its answer.
//  4. Send and answer: the service's answer, its headers scrubbed, its
//     body decoded and read through the scrubber, whole or streamed.
//
// Only how the answer's body is carried differs between the two paths.

// Grant is what an authorized call may use: the service, how the
// credential is injected, the limits, and (for Prepare) the secret's
// material. The engine sends the edge one, sealed (EdgeInjection).
type Grant = EdgeInjection

// Timeout is the call's broker_timeout.
func (g *Grant) Timeout() time.Duration { return time.Duration(g.TimeoutSeconds) * time.Second }

// Request is the caller's call as either path has it.
type Request struct {
	Method string
	// Target is the service's path with query, as the caller escaped it:
	// relative to the service's first base URL, or absolute under one of
	// its base_urls.
	Target string
	Header http.Header
	// Body is nil for none; ContentLength is -1 when unknown.
	Body          io.Reader
	ContentLength int64
	// CallerToken is the caller's Vault token, dropped wherever it stands
	// in the headers.
	CallerToken string
}

// Checked is a request that passed the checks that need no secret.
type Checked struct {
	grant  *Grant
	req    Request
	target *url.URL
	header http.Header
}

// Check checks r against g (whose Material it does not need): the target,
// the body's declared size and the caller's headers.
func Check(g *Grant, r Request) (*Checked, error) {
	target, err := ResolveTarget(g.Service, r.Target)
	if err != nil {
		return nil, err
	}
	if r.ContentLength > g.MaxBody {
		return nil, TooLarge("request", g.MaxBody)
	}
	header, err := OutboundHeaders(r.Header, g.Injection, r.CallerToken)
	if err != nil {
		return nil, err
	}
	return &Checked{grant: g, req: r, target: target, header: header}, nil
}

// Outgoing is a request ready to send and the scrubber for its answer.
type Outgoing struct {
	Request  *http.Request
	Scrubber *Scrubber
	grant    *Grant
	target   *url.URL
	body     *limitedBody
}

// Prepare builds the outgoing request with m injected; ctx bounds the
// whole call, answer included. The caller zeroes the scrubber (Close of
// the answer does) and m.
func (c *Checked) Prepare(ctx context.Context, m Material) (*Outgoing, error) {
	var body io.Reader
	var limited *limitedBody
	switch b := c.req.Body.(type) {
	case nil:
	case *bytes.Reader, *strings.Reader:
		// Of known length, which Check bounded; as they are, they let
		// the transport send them again on a pooled connection that
		// turns out closed.
		body = b
	default:
		if b != http.NoBody {
			limited = &limitedBody{r: b, left: c.grant.MaxBody}
			body = limited
		}
	}
	req, err := http.NewRequestWithContext(ctx, c.req.Method, c.target.String(), body)
	if err != nil {
		return nil, BadRequest("cannot build the request: %s", Truncate(c.req.Method, 16))
	}
	if limited != nil {
		req.ContentLength = c.req.ContentLength
	}
	req.Header = c.header
	req.Header.Set("Accept-Encoding", AcceptEncoding)
	if err := Inject(req, c.grant.Injection, m); err != nil {
		if limited != nil && limited.over {
			return nil, TooLarge("request", c.grant.MaxBody)
		}
		return nil, err
	}
	return &Outgoing{Request: req, Scrubber: ScrubberFor(c.grant.Injection, m), grant: c.grant, target: c.target, body: limited}, nil
}

// Send sends the request with client and returns the service's answer:
// its headers scrubbed, its body decoded for the scrubber. timeout is the
// one that bounds ctx, for the message when it runs out.
func (o *Outgoing) Send(client *http.Client, timeout time.Duration) (*Answer, error) {
	ctx := o.Request.Context()
	resp, err := client.Do(o.Request)
	if err != nil {
		if o.body != nil && o.body.over {
			return nil, TooLarge("request", o.grant.MaxBody)
		}
		return nil, SendError(ctx, o.target, timeout, err)
	}
	if resp.ContentLength > o.grant.MaxBody {
		resp.Body.Close()
		return nil, TooLarge("answer", o.grant.MaxBody)
	}
	decoded, err := DecodeBody(resp)
	if err != nil {
		resp.Body.Close()
		return nil, err
	}
	return &Answer{
		Status:  resp.StatusCode,
		Header:  AnswerHeaders(resp.Header, o.Scrubber),
		Body:    decoded,
		Encoded: len(resp.Header.Values("Content-Encoding")) > 0,
		Length:  resp.ContentLength,
		out:     o,
		resp:    resp,
	}, nil
}

// Answer is the service's answer. Body is decoded but not yet scrubbed:
// read it through the Scrubber (ReadAll does, or a Scrubber writer).
type Answer struct {
	Status int
	// Header is scrubbed of the credential and of hop-by-hop headers.
	Header http.Header
	Body   io.Reader
	// Encoded says the service compressed the body, so Length is not
	// the length of Body.
	Encoded bool
	// Length is the service's Content-Length (-1 unknown).
	Length int64

	out  *Outgoing
	resp *http.Response
}

// Scrubber is the scrubber for the answer's body.
func (a *Answer) Scrubber() *Scrubber { return a.out.Scrubber }

// MaxBody is the grant's bound on the answer's body.
func (a *Answer) MaxBody() int64 { return a.out.grant.MaxBody }

// Close ends the answer and zeroes the scrubber's secret forms.
func (a *Answer) Close() {
	a.resp.Body.Close()
	a.out.Scrubber.Zero()
}

// PointAtBroker rewrites Location and Link to brokerBase (the broker URL
// of the credential), where they point within the service, so a client
// that follows them stays on the broker.
func (a *Answer) PointAtBroker(brokerBase string) {
	svc, target := a.out.grant.Service, a.out.target
	if loc := a.Header.Get("Location"); loc != "" {
		a.Header.Set("Location", RewriteLocation(svc, target, loc, brokerBase))
	}
	if links := a.Header.Values("Link"); len(links) > 0 {
		a.Header.Del("Link")
		for _, l := range links {
			if l = RewriteLink(svc, target, l, brokerBase); l != "" {
				a.Header.Add("Link", l)
			}
		}
	}
}

// RedirectPath is a redirect's target relative to the service's first
// base URL, when it points there ("" otherwise).
func (a *Answer) RedirectPath() string {
	if a.Status < 300 || a.Status >= 400 {
		return ""
	}
	loc := a.Header.Get("Location")
	if loc == "" {
		return ""
	}
	ref, err := url.Parse(loc)
	if err != nil {
		return ""
	}
	return BrokerPath(a.out.grant.Service, a.out.target.ResolveReference(ref))
}

// ErrAnswerOver is ReadAll's answer to a body over its bound.
var ErrAnswerOver = errors.New("the answer is over its bound")

// ReadAll reads the whole body through the scrubber, at most max bytes
// of it. Over max, it returns what it read (cut, scrubbed) with
// ErrAnswerOver; a body cut short or timed out is the read's error.
func (a *Answer) ReadAll(max int64) ([]byte, error) {
	var out bytes.Buffer
	sw := a.out.Scrubber.NewWriter(&out)
	n, err := io.Copy(sw, io.LimitReader(a.Body, max+1))
	_ = sw.Close()
	if err != nil {
		clear(out.Bytes())
		return nil, err
	}
	if n > max {
		b := out.Bytes()
		return b[:min(int64(len(b)), max)], ErrAnswerOver
	}
	return out.Bytes(), nil
}

// ReadError words a failed read of the answer for the caller.
func (a *Answer) ReadError(err error, timeout time.Duration) *Error {
	host := a.out.target.Host
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(a.out.Request.Context().Err(), context.DeadlineExceeded) {
		return &Error{Status: http.StatusGatewayTimeout, Permanent: true, Msg: host + " did not finish its answer within broker_timeout (" + timeout.String() + ")"}
	}
	return &Error{Status: http.StatusBadGateway, Msg: "reading the answer of " + host + " failed"}
}

// BrokerBase is the broker URL of cred in org under the portal's public
// URL, which PointAtBroker points answers at.
func BrokerBase(publicURL, org, cred string) string {
	return strings.TrimSuffix(publicURL, "/") + "/broker/" + org + "/" + cred
}

// limitedBody passes a request body on up to a limit, then fails the read
// (and the call) instead of sending a truncated body.
type limitedBody struct {
	r    io.Reader
	left int64
	over bool
}

func (l *limitedBody) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		l.over = true
		return 0, errors.New("request body over broker_max_body")
	}
	return n, err
}
