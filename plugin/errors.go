package credentials

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/egress"
	mailsubmit "github.com/clankteam/credentials/plugin/mail"
	"github.com/clankteam/credentials/plugin/provider"
)

// userError is the engine's one kind of error a caller is told about: a
// mistake the caller can fix, or a refusal, with the status the caller gets
// and a message that says what is wrong and names no secret. It is
// egress.Error because the portal's edge answers with the same errors.
// Any other error is the engine's own failure (storage, a bug): Vault
// answers it with 500.
type userError = egress.Error

// userErrorf is the caller's mistake (400).
func userErrorf(format string, args ...any) error {
	return egress.BadRequest(format, args...)
}

// userErrorMsg is userErrorf for a message already written.
func userErrorMsg(msg string) error {
	return &userError{Status: http.StatusBadRequest, Msg: msg, Permanent: true}
}

// errorResponse is the one place an error becomes Vault's answer: a
// userError answers 400 with its message (or its own status: 413, 429,
// 502, 504); a provider's refusal of a grant or a client is the caller's
// to fix, so 400 too, as is a message SMTP could not take; Vault's own errors (read-only, permission denied)
// pass as they are, so that Vault forwards or refuses the request; every
// other error is a failure of the engine, answered 500.
func errorResponse(err error) (*logical.Response, error) {
	var ue *userError
	var pe *provider.Error
	var me *mailsubmit.Error
	switch {
	case err == nil:
		return nil, nil
	case errors.As(err, &ue):
		if ue.Status == http.StatusBadRequest {
			// ErrorResponse keeps the message in the response's data,
			// where the vault CLI and the API client show it.
			return logical.ErrorResponse(ue.Msg), nil
		}
		return nil, logical.CodedError(ue.Status, ue.Msg)
	case errors.As(err, &pe) && pe.Kind != provider.Transient:
		return logical.ErrorResponse(err.Error()), nil
	case errors.As(err, &me):
		// The message is not one SMTP could take (mail/mailsubmit).
		return logical.ErrorResponse(me.Msg), nil
	case errors.Is(err, errCredentialGone) || errors.Is(err, errNotOAuth):
		return logical.ErrorResponse(err.Error()), nil
	}
	return nil, err
}

// answerErrors routes every operation of paths through errorResponse, so
// that a handler returns its errors and never chooses their status itself.
func answerErrors(paths []*framework.Path) []*framework.Path {
	for _, p := range paths {
		for op, h := range p.Operations {
			po, ok := h.(*framework.PathOperation)
			if !ok || po.Callback == nil {
				panic(fmt.Sprintf("path %s: operation %s is not a framework.PathOperation", p.Pattern, op))
			}
			next := po.Callback
			po.Callback = func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
				resp, err := next(ctx, req, d)
				if err != nil {
					return errorResponse(err)
				}
				return resp, nil
			}
		}
	}
	return paths
}
