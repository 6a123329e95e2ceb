package provider

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// quirkTransport adapts a provider's token endpoint to RFC 6749 on the
// wire, so that x/oauth2 sees standard answers: it asks for JSON where the
// catalog says the provider needs it, then passes the answer through the
// adapters of the provider's quirk families.
type quirkTransport struct {
	base     http.RoundTripper
	spec     *Spec
	adapters []tokenAdapter
}

func (t quirkTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.spec.AcceptJSON {
		req = req.Clone(req.Context())
		req.Header.Set("Accept", "application/json")
	}
	if t.spec.Resource != "" {
		var err error
		if req, err = withResource(req, t.spec.Resource); err != nil {
			return nil, err
		}
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil || len(t.adapters) == 0 {
		return resp, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading the token endpoint's answer: %w", err)
	}
	tr := &tokenResponse{status: resp.StatusCode, header: resp.Header.Clone(), body: body}
	for _, adapt := range t.adapters {
		adapt(tr)
	}
	resp.StatusCode = tr.status
	resp.Status = fmt.Sprintf("%d %s", tr.status, http.StatusText(tr.status))
	resp.Header = tr.header
	resp.Header.Del("Content-Length")
	resp.ContentLength = int64(len(tr.body))
	resp.Body = io.NopCloser(strings.NewReader(string(tr.body)))
	return resp, nil
}

// withResource adds RFC 8707's resource to a token request's form. x/oauth2
// takes extra parameters on the code exchange but not on refresh, and both
// must carry it; this is the one place that sees every token request.
func withResource(req *http.Request, resource string) (*http.Request, error) {
	if req.Method != http.MethodPost || req.Body == nil || !strings.HasPrefix(req.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		return req, nil
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, maxBody))
	req.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading the token request: %w", err)
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("the token request is not a form: %w", err)
	}
	if form.Get("resource") == "" {
		form.Set("resource", resource)
	}
	enc := form.Encode()
	out := req.Clone(req.Context())
	out.Body = io.NopCloser(strings.NewReader(enc))
	out.ContentLength = int64(len(enc))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(enc)), nil }
	return out, nil
}

// tokenResponse is a token endpoint's answer as the adapters see it.
type tokenResponse struct {
	status int
	header http.Header
	body   []byte
}

func (r *tokenResponse) setJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	r.body = b
	r.header.Set("Content-Type", "application/json")
}

func (r *tokenResponse) jsonBody() map[string]any {
	var m map[string]any
	if ct := r.header.Get("Content-Type"); !strings.Contains(ct, "json") && !strings.HasPrefix(strings.TrimSpace(string(r.body)), "{") {
		return nil
	}
	if json.Unmarshal(r.body, &m) != nil {
		return nil
	}
	return m
}

// tokenAdapter rewrites one quirk family's answers into RFC 6749's shape.
type tokenAdapter func(*tokenResponse)

// tokenAdapters picks the adapters spec's flags call for. Form-encoded
// answers (GitHub without Accept: application/json) are always turned into
// JSON, so that expires_in is read the same way for every provider.
func tokenAdapters(spec *Spec) []tokenAdapter {
	a := []tokenAdapter{formToJSON}
	if spec.OKField {
		a = append(a, okFieldToStatus)
	}
	if spec.ErrorsWith200 {
		a = append(a, errorBodyToStatus)
	}
	return a
}

// formToJSON turns an application/x-www-form-urlencoded answer into JSON,
// with expires_in as a number.
func formToJSON(r *tokenResponse) {
	ct := r.header.Get("Content-Type")
	if !strings.HasPrefix(ct, "application/x-www-form-urlencoded") && !strings.HasPrefix(ct, "text/plain") {
		return
	}
	vals, err := url.ParseQuery(string(r.body))
	if err != nil {
		return
	}
	m := map[string]any{}
	for k := range vals {
		v := vals.Get(k)
		if k == "expires_in" || k == "refresh_token_expires_in" {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				m[k] = n
				continue
			}
		}
		m[k] = v
	}
	r.setJSON(m)
}

// okFieldToStatus (Slack): {"ok": false, "error": "..."} with HTTP 200 is a
// failure; it gets the status a standard server would send. A success whose
// token is only under authed_user (user-token installs) gets it lifted to
// the top level.
func okFieldToStatus(r *tokenResponse) {
	m := r.jsonBody()
	if m == nil {
		return
	}
	ok, present := m["ok"].(bool)
	if !present {
		return
	}
	if !ok {
		code, _ := m["error"].(string)
		if code == "" {
			code = "unknown_error"
		}
		r.status = slackErrorStatus(code)
		r.setJSON(map[string]any{"error": code})
		return
	}
	if _, has := m["access_token"]; !has {
		if u, isMap := m["authed_user"].(map[string]any); isMap {
			for _, k := range []string{"access_token", "refresh_token", "token_type", "expires_in", "scope"} {
				if v, has := u[k]; has {
					m[k] = v
				}
			}
			r.setJSON(m)
		}
	}
}

func slackErrorStatus(code string) int {
	switch code {
	case "ratelimited":
		return http.StatusTooManyRequests
	case "internal_error", "fatal_error", "service_unavailable", "request_timeout":
		return http.StatusServiceUnavailable
	}
	return http.StatusBadRequest
}

// errorBodyToStatus (GitHub): an error body with HTTP 200 gets the status
// a standard server would send.
func errorBodyToStatus(r *tokenResponse) {
	if r.status != http.StatusOK {
		return
	}
	m := r.jsonBody()
	if code, _ := m["error"].(string); code != "" {
		r.status = http.StatusBadRequest
		if isTransientCode(code) {
			r.status = http.StatusServiceUnavailable
		}
	}
}
