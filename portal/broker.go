package portal

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// The broker: /broker/{org}/{cred}/{path...} takes any method and answers
// like the service itself, so an agent (or a service's SDK with its base URL
// set here) talks to it as to the service. The caller's Vault token is
// passed to the engine's proxy/<cred> path, so Vault's ACL decides; the
// portal holds no token and sees no credential.

const (
	// maxBrokerRequestBody is what fits through Vault's default request
	// size limit (32 MiB) once base64-encoded; the engine's broker_max_body
	// is usually lower and is enforced there.
	maxBrokerRequestBody = 24 << 20
	// brokerVaultTimeout bounds one call to Vault; the engine's own
	// broker_timeout (default 30s) bounds the service call inside it.
	brokerVaultTimeout = 2 * time.Minute
)

var (
	brokerOrgPattern  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	brokerCredPattern = regexp.MustCompile(`^[a-z0-9_.-]{1,128}$`)
)

// brokerTokenHeaders are the headers SDKs put their API key in, besides
// Authorization: an agent's SDK sends its Vault token there.
var brokerTokenHeaders = []string{"X-Vault-Token", "X-Api-Key", "Api-Key"}

// brokerDroppedHeaders never go to the engine (it drops them too): the
// caller's credentials, the portal's cookies, and per-connection headers.
var brokerDroppedHeaders = []string{
	"Authorization", "Proxy-Authorization", "Cookie", "Host", "Content-Length",
	"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// brokerHandler forwards agents' calls to the engine's proxy path.
type brokerHandler struct {
	vaultAddr string
	client    *http.Client
	logger    *slog.Logger
}

// newBrokerHandler serves /broker/ against the Vault at vaultAddr. TLS
// settings for Vault come from the environment (VAULT_CACERT, ...) as for
// every Vault client.
func newBrokerHandler(vaultAddr string, logger *slog.Logger) http.Handler {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if cfg := api.DefaultConfig(); cfg != nil && cfg.Error == nil {
		if vt, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
			t = vt.Clone()
		}
	}
	// Agents call concurrently; keep enough connections to Vault open that
	// none is set up per call.
	t.MaxIdleConns = 512
	t.MaxIdleConnsPerHost = 256
	if logger == nil {
		logger = slog.Default()
	}
	return &brokerHandler{
		vaultAddr: strings.TrimSuffix(vaultAddr, "/"),
		client:    &http.Client{Transport: t, Timeout: brokerVaultTimeout},
		logger:    logger,
	}
}

// proxyRequest is the body of a write to orgs/<org>/proxy/<cred>.
type proxyRequest struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Headers map[string][]string `json:"headers,omitempty"`
	Body    string              `json:"body,omitempty"`
}

// proxyResponse is what the engine answers.
type proxyResponse struct {
	Data struct {
		Status       int                 `json:"status"`
		Headers      map[string][]string `json:"headers"`
		Body         string              `json:"body"`
		RedirectPath string              `json:"redirect_path"`
	} `json:"data"`
	Errors []string `json:"errors"`
}

func (h *brokerHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	status := h.serve(w, r)
	h.logger.Info("broker", "method", r.Method, "path", brokerLogPath(r), "status", status,
		"duration_ms", time.Since(start).Milliseconds())
}

// serve handles one call and returns the status sent, for the log.
func (h *brokerHandler) serve(w http.ResponseWriter, r *http.Request) int {
	org, cred, rest, ok := splitBrokerPath(r.URL.EscapedPath())
	if !ok {
		return brokerFail(w, http.StatusNotFound, "use /broker/<org>/<credential>/<path of the service>")
	}
	token, from := brokerToken(r.Header)
	if token == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="credentials broker"`)
		return brokerFail(w, http.StatusUnauthorized,
			"send your Vault token as Authorization: Bearer <token>, X-Vault-Token, or the header your service's SDK puts its key in")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBrokerRequestBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return brokerFail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", maxBrokerRequestBody))
		}
		return brokerFail(w, http.StatusBadRequest, "reading the request body failed")
	}

	headers := r.Header.Clone()
	for _, name := range brokerDroppedHeaders {
		headers.Del(name)
	}
	headers.Del(from)
	for name, values := range headers {
		if strings.HasPrefix(name, "X-Vault-") || strings.HasPrefix(name, "X-Forwarded-") {
			delete(headers, name)
			continue
		}
		// An SDK may send its key (the Vault token) in a second header.
		for _, v := range values {
			if strings.Contains(v, token) {
				delete(headers, name)
				break
			}
		}
	}
	path := rest
	if r.URL.RawQuery != "" {
		path += "?" + r.URL.RawQuery
	}
	preq := proxyRequest{Method: r.Method, Path: path, Headers: headers}
	if len(body) > 0 {
		preq.Body = base64.StdEncoding.EncodeToString(body)
	}
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(preq); err != nil {
		return brokerFail(w, http.StatusInternalServerError, "encoding the request failed")
	}

	ctx, cancel := context.WithTimeout(r.Context(), brokerVaultTimeout)
	defer cancel()
	vreq, err := http.NewRequestWithContext(ctx, http.MethodPost, h.vaultAddr+"/v1/orgs/"+org+"/proxy/"+cred, &buf)
	if err != nil {
		return brokerFail(w, http.StatusInternalServerError, "building the Vault request failed")
	}
	vreq.Header.Set("X-Vault-Token", token)
	vreq.Header.Set("Content-Type", "application/json")
	vresp, err := h.client.Do(vreq)
	if err != nil {
		h.logger.Warn("broker: calling vault", "error", err)
		return brokerFail(w, http.StatusBadGateway, "Vault cannot be reached")
	}
	defer vresp.Body.Close()
	var presp proxyResponse
	if err := json.NewDecoder(vresp.Body).Decode(&presp); err != nil && vresp.StatusCode == http.StatusOK {
		return brokerFail(w, http.StatusBadGateway, "Vault's answer could not be read")
	}
	if vresp.StatusCode != http.StatusOK {
		return brokerVaultError(w, vresp.StatusCode, presp.Errors)
	}
	out, err := base64.StdEncoding.DecodeString(presp.Data.Body)
	if err != nil || presp.Data.Status < 100 || presp.Data.Status > 999 {
		return brokerFail(w, http.StatusBadGateway, "the engine's answer could not be read")
	}
	for name, values := range presp.Data.Headers {
		canon := http.CanonicalHeaderKey(name)
		// Cookies of the service would land on the portal's domain.
		if canon == "Set-Cookie" || canon == "Content-Length" {
			continue
		}
		for _, v := range values {
			w.Header().Add(canon, v)
		}
	}
	if presp.Data.RedirectPath != "" {
		// Keep the caller on the broker for redirects within the service.
		w.Header().Set("Location", "/broker/"+org+"/"+cred+presp.Data.RedirectPath)
	}
	w.WriteHeader(presp.Data.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(out)
	}
	return presp.Data.Status
}

// splitBrokerPath takes /broker/<org>/<cred>/<rest> apart; rest keeps its
// percent-encoding and starts with '/'.
func splitBrokerPath(escaped string) (org, cred, rest string, ok bool) {
	p, found := strings.CutPrefix(escaped, "/broker/")
	if !found {
		return "", "", "", false
	}
	parts := strings.SplitN(p, "/", 3)
	if len(parts) < 2 {
		return "", "", "", false
	}
	org, cred, rest = parts[0], parts[1], "/"
	if len(parts) == 3 {
		rest = "/" + parts[2]
	}
	if !brokerOrgPattern.MatchString(org) || !brokerCredPattern.MatchString(cred) || strings.Trim(cred, ".") == "" {
		return "", "", "", false
	}
	return org, cred, rest, true
}

// brokerToken finds the caller's Vault token and the header it came in.
func brokerToken(h http.Header) (token, header string) {
	if auth := h.Get("Authorization"); auth != "" {
		scheme, value, _ := strings.Cut(auth, " ")
		value = strings.TrimSpace(value)
		if strings.EqualFold(scheme, "Basic") {
			// SDKs that use basic auth send their key as the user name
			// (or, some, as the password).
			if raw, err := base64.StdEncoding.DecodeString(value); err == nil {
				user, pass, _ := strings.Cut(string(raw), ":")
				if user != "" {
					return user, "Authorization"
				}
				return pass, "Authorization"
			}
			return "", "Authorization"
		}
		// Bearer, and the schemes some services use (token, Bot).
		return value, "Authorization"
	}
	for _, name := range brokerTokenHeaders {
		if v := h.Get(name); v != "" {
			return v, name
		}
	}
	return "", ""
}

// brokerVaultError answers with Vault's refusal: its status and messages
// (permission denied, a bad path, the service's size or time limits).
func brokerVaultError(w http.ResponseWriter, status int, errs []string) int {
	msg := strings.Join(errs, "; ")
	switch {
	case status == http.StatusForbidden:
		msg = "permission denied: this token may not use this credential this way (" + msg + ")"
	case status >= 500 && status != http.StatusBadGateway && status != http.StatusGatewayTimeout:
		status = http.StatusBadGateway
		if msg == "" {
			msg = "Vault failed"
		}
	case msg == "":
		msg = http.StatusText(status)
	}
	return brokerFail(w, status, msg)
}

// brokerFail answers in the error shape Stripe, OpenAI and Anthropic share,
// so an SDK shows the message; X-Broker-Error tells it from the service's
// own errors.
func brokerFail(w http.ResponseWriter, status int, msg string) int {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Broker-Error", "true")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"error": map[string]any{"type": "broker_error", "message": msg},
	})
	return status
}

// brokerLogPath is the path for logs: org and credential, not the rest,
// which may carry customer data.
func brokerLogPath(r *http.Request) string {
	org, cred, _, ok := splitBrokerPath(r.URL.EscapedPath())
	if !ok {
		return "/broker/?"
	}
	return "/broker/" + org + "/" + cred + "/…"
}
