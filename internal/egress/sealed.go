package egress

import (
	"crypto/hpke"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The edge (the portal's /broker) streams agents' calls itself, and asks
// the engine, with the agent's own token, only for the call's injection:
// the engine answers it sealed with HPKE to an edge public key the
// operator configured, so that the agent, which could make the same Vault
// call, receives only ciphertext.

// Operator settings of the edge keys: the plugin's environment lists the
// public keys it seals to; the portal's holds one private key.
const (
	EdgeKeysEnv = "CREDENTIALS_EDGE_KEYS"
	EdgeKeyEnv  = "PORTAL_EDGE_KEY"
)

// The suite: hybrid ML-KEM-768 + X25519, so a recorded answer stays
// sealed against a future quantum computer; HKDF-SHA256; AES-256-GCM.
var (
	edgeKEM  = hpke.MLKEM768X25519()
	edgeKDF  = hpke.HKDFSHA256()
	edgeAEAD = hpke.AES256GCM()
)

// EdgeInjection is what the edge needs to make one credential's calls: the
// service's base URLs, how to inject, the secret, the operator's private
// targets (so the edge's dial guard is the engine's), the mount's limits,
// and until when it may be reused for this token.
type EdgeInjection struct {
	Cred           string    `json:"cred"`
	Service        Service   `json:"service"`
	Injection      Injection `json:"injection"`
	Material       Material  `json:"material"`
	PrivateTargets string    `json:"private_targets,omitempty"`
	TimeoutSeconds int64     `json:"timeout_seconds"`
	MaxBody        int64     `json:"max_body"`
	UseUntil       time.Time `json:"use_until"`
	// ReportKey signs what the edge tells the engine of an agent's calls
	// (trail-report, approvals/request), so the agent, which cannot open
	// the injection, cannot tell it; only agents' injections have one.
	ReportKey []byte `json:"report_key,omitempty"`
	// ApprovalRules are the calls of the credential this agent makes only
	// once a person approves them (contract.ParseApprovalRule).
	ApprovalRules []string `json:"approval_rules,omitempty"`
	// Limited says limits hold for these calls: the edge leases them from
	// the engine (limits/lease) before it makes them.
	Limited bool `json:"limited,omitempty"`
	// MeterUsage asks the edge to read the usage the answers report and
	// tell the engine (limits/spend), for spend limits.
	MeterUsage bool `json:"meter_usage,omitempty"`
}

// sealInfo binds a sealed injection to its mount and credential, so one
// cannot be opened as another's.
func sealInfo(mount, cred string) []byte {
	return []byte("credentials edge injection v1\x00" + strings.Trim(mount, "/") + "\x00" + cred)
}

// MCPLogin is an MCP grant's AppRole login, which the engine hands the
// portal's OAuth server sealed (SealFor) so that only it can mint the
// agent's tokens.
type MCPLogin struct {
	RoleID   string `json:"role_id"`
	SecretID string `json:"secret_id"`
}

// MCPLoginInfo binds a sealed MCP login to its mount and grant.
func MCPLoginInfo(mount, grant string) string {
	return "credentials mcp login v1\x00" + strings.Trim(mount, "/") + "\x00" + grant
}

// EdgePublicKey is one key the engine may seal to.
type EdgePublicKey struct {
	ID  string
	key hpke.PublicKey
}

// EdgePrivateKey is the edge's key.
type EdgePrivateKey struct {
	ID  string
	key hpke.PrivateKey
}

// keyID names a public key by its hash, so ids never collide by accident.
func keyID(pub []byte) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:6])
}

// GenerateEdgeKey returns a new key pair as the two settings lines.
func GenerateEdgeKey() (private, public string, err error) {
	k, err := edgeKEM.GenerateKey()
	if err != nil {
		return "", "", err
	}
	priv, err := k.Bytes()
	if err != nil {
		return "", "", err
	}
	pub := k.PublicKey().Bytes()
	id := keyID(pub)
	return id + ":" + base64.StdEncoding.EncodeToString(priv), id + ":" + base64.StdEncoding.EncodeToString(pub), nil
}

// ParseEdgePublicKeys reads CREDENTIALS_EDGE_KEYS: comma-separated
// <key id>:<base64 public key>.
func ParseEdgePublicKeys(list string) ([]EdgePublicKey, error) {
	var keys []EdgePublicKey
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		id, b64, ok := strings.Cut(item, ":")
		raw, err := base64.StdEncoding.DecodeString(b64)
		if !ok || err != nil {
			return nil, fmt.Errorf("%s: each key must be <key id>:<base64 public key>", EdgeKeysEnv)
		}
		pk, err := edgeKEM.NewPublicKey(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: key %s is not a public key of this suite: %w", EdgeKeysEnv, id, err)
		}
		if id != keyID(raw) {
			return nil, fmt.Errorf("%s: key id %s does not match its key (want %s)", EdgeKeysEnv, id, keyID(raw))
		}
		keys = append(keys, EdgePublicKey{ID: id, key: pk})
	}
	return keys, nil
}

// ParseEdgePrivateKey reads PORTAL_EDGE_KEY: <key id>:<base64 private key>.
func ParseEdgePrivateKey(s string) (*EdgePrivateKey, error) {
	id, b64, ok := strings.Cut(strings.TrimSpace(s), ":")
	raw, err := base64.StdEncoding.DecodeString(b64)
	if !ok || err != nil {
		return nil, fmt.Errorf("%s must be <key id>:<base64 private key> (portal edge-key prints one)", EdgeKeyEnv)
	}
	defer clear(raw)
	k, err := edgeKEM.NewPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("%s is not a private key of this suite", EdgeKeyEnv)
	}
	if id != keyID(k.PublicKey().Bytes()) {
		return nil, fmt.Errorf("%s: key id %s does not match its key", EdgeKeyEnv, id)
	}
	return &EdgePrivateKey{ID: id, key: k}, nil
}

// ErrUnknownEdgeKey is a sealed request for a key the operator did not
// configure.
var ErrUnknownEdgeKey = errors.New("unknown edge key")

// SealInjection seals inj to the key named id, for mount.
func SealInjection(keys []EdgePublicKey, id, mount string, inj *EdgeInjection) (string, error) {
	for _, k := range keys {
		if k.ID != id {
			continue
		}
		plain, err := json.Marshal(inj)
		if err != nil {
			return "", fmt.Errorf("encoding the injection: %w", err)
		}
		defer clear(plain)
		ct, err := hpke.Seal(k.key, edgeKDF, edgeAEAD, sealInfo(mount, inj.Cred), plain)
		if err != nil {
			return "", fmt.Errorf("sealing the injection: %w", err)
		}
		return base64.StdEncoding.EncodeToString(ct), nil
	}
	return "", ErrUnknownEdgeKey
}

// SealFor seals v (as JSON) to the key named id under info, which binds
// the sealed value to what it is for: anything else the engine hands the
// edge and no agent may read, such as an MCP grant's login.
func SealFor(keys []EdgePublicKey, id, info string, v any) (string, error) {
	for _, k := range keys {
		if k.ID != id {
			continue
		}
		plain, err := json.Marshal(v)
		if err != nil {
			return "", fmt.Errorf("encoding the sealed value: %w", err)
		}
		defer clear(plain)
		ct, err := hpke.Seal(k.key, edgeKDF, edgeAEAD, []byte(info), plain)
		if err != nil {
			return "", fmt.Errorf("sealing: %w", err)
		}
		return base64.StdEncoding.EncodeToString(ct), nil
	}
	return "", ErrUnknownEdgeKey
}

// OpenFor opens what SealFor sealed under info into v.
func (k *EdgePrivateKey) OpenFor(info, sealed string, v any) error {
	ct, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil {
		return errors.New("sealed value is not base64")
	}
	plain, err := hpke.Open(k.key, edgeKDF, edgeAEAD, []byte(info), ct)
	if err != nil {
		return errors.New("sealed value does not open with this edge key")
	}
	defer clear(plain)
	if err := json.Unmarshal(plain, v); err != nil {
		return errors.New("sealed value is malformed")
	}
	return nil
}

// Open opens a sealed injection for mount and cred. The caller zeroes the
// material when the call is done.
func (k *EdgePrivateKey) Open(mount, cred, sealed string) (*EdgeInjection, error) {
	plain, err := k.OpenRaw(mount, cred, sealed)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	return ParseInjection(plain, cred)
}

// OpenRaw opens a sealed injection to its JSON form, for a holder that
// keeps it sealed under a key of its own between calls. The caller zeroes
// the result.
func (k *EdgePrivateKey) OpenRaw(mount, cred, sealed string) ([]byte, error) {
	ct, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil {
		return nil, errors.New("sealed injection is not base64")
	}
	plain, err := hpke.Open(k.key, edgeKDF, edgeAEAD, sealInfo(mount, cred), ct)
	if err != nil {
		return nil, errors.New("sealed injection does not open with this edge key")
	}
	return plain, nil
}

// ParseInjection decodes an opened injection and checks that it is cred's.
func ParseInjection(plain []byte, cred string) (*EdgeInjection, error) {
	var inj EdgeInjection
	if err := json.Unmarshal(plain, &inj); err != nil {
		return nil, errors.New("sealed injection is malformed")
	}
	if inj.Cred != cred {
		inj.Material.Zero()
		return nil, errors.New("sealed injection is for another credential")
	}
	return &inj, nil
}
