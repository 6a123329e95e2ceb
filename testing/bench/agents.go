package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/clankteam/credentials/testing/smtpserver"
)

// The agents' other front doors: an MCP tool call that wraps the edge's
// call, and a message sent with an SMTP credential to a local server.

const (
	mailer       = "mailer"
	mailUser     = "bench@acme.example"
	mailPassword = "smtp-BENCH-pw-0123"
)

// startSMTP starts the local submission server the mailer credential
// points at, with a certificate from the harness's CA.
func (st *stack) startSMTP() error {
	cfg, err := st.vault.CA.ServerTLS()
	if err != nil {
		return err
	}
	st.smtp, err = smtpserver.Start(smtpserver.Options{Username: mailUser, Password: mailPassword, TLS: cfg})
	return err
}

func (st *stack) mailerCred() map[string]interface{} {
	return map[string]interface{}{"type": "password", "service": "smtp", "username": mailUser, "password": mailPassword,
		"host": st.smtp.Host, "port": st.smtp.Port}
}

var (
	mcpToolCall = []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + cred + `","arguments":{"path":"/v1/ping"}}}`)
	mailMessage = []byte(`{"from":"bench@acme.example","to":["ops@acme.example"],"subject":"bench","text":"one message"}`)
)

func (st *stack) agentScenarios() []scenario {
	return []scenario{
		{"mcp", "MCP tools/call wrapping the edge's call", func(ctx context.Context) error {
			return checkToolCall(st.post(ctx, st.portalURL+"/mcp/"+org, mcpToolCall, "application/json, text/event-stream"))
		}},
		st.mcpOAuthScenario(),
		{"mail", "one message through the edge's /send (engine to local SMTP)", func(ctx context.Context) error {
			_, err := st.post(ctx, st.portalURL+"/broker/"+org+"/"+mailer+"/send", mailMessage, "")
			return err
		}},
	}
}

// checkToolCall wants a tools/call answer that is not an error.
func checkToolCall(out []byte, err error) error {
	if err != nil {
		return err
	}
	var v struct {
		Result struct {
			IsError bool `json:"isError"`
		} `json:"result"`
		Error any `json:"error"`
	}
	if err := json.Unmarshal(out, &v); err != nil || v.Error != nil || v.Result.IsError {
		return fmt.Errorf("tool call answered %.300s", out)
	}
	return nil
}

// post sends body as JSON with the agent's AppRole token and wants a 200.
func (st *stack) post(ctx context.Context, url string, body []byte, accept string) ([]byte, error) {
	return st.postAs(ctx, st.agentToken, url, body, accept)
}

// postAs sends body as JSON with token and wants a 200.
func (st *stack) postAs(ctx context.Context, token, url string, body []byte, accept string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := st.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d: %.300s", resp.StatusCode, out)
	}
	return out, nil
}
