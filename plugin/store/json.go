package store

import (
	"context"
	"fmt"

	"github.com/hashicorp/vault/sdk/logical"
)

// ReadJSON reads the JSON record under key; nil when there is none. what
// names the record in errors ("credential x", "app y").
func ReadJSON[T any](ctx context.Context, s logical.Storage, key, what string) (*T, error) {
	entry, err := s.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", what, err)
	}
	if entry == nil {
		return nil, nil
	}
	v := new(T)
	if err := entry.DecodeJSON(v); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", what, err)
	}
	return v, nil
}
