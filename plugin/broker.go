package credentials

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"sync"

	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/plugin/catalog"
)

// egressRuntime is what this mount's calls to services share: the
// operator's dial guard, the connection pools built on it, and the edge
// keys sealed answers are for. All come from the plugin's environment
// (vault plugin register -env), which org admins can neither see nor change.
type egressRuntime struct {
	guard    *egress.Guard
	edgeKeys []egress.EdgePublicKey
	// roots are the CAs SMTP servers are checked against; nil is the
	// system's (an operator adds one with SSL_CERT_FILE at registration).
	roots *x509.CertPool
	// prices are the operator's price tables by service (PricesEnv),
	// which win over the catalog's.
	prices map[string]map[string]catalog.Price

	// once builds broker lazily, so that tests can set the guard first.
	once   sync.Once
	broker *http.Client
}

// newEgressRuntime reads the operator settings from the environment. A
// setting that does not parse fails the mount: silently ignoring it would
// either open private targets or break every call.
func newEgressRuntime() (*egressRuntime, error) {
	guard, err := egress.ParseGuard(os.Getenv(egress.PrivateTargetsEnv))
	if err != nil {
		return nil, err
	}
	keys, err := egress.ParseEdgePublicKeys(os.Getenv(egress.EdgeKeysEnv))
	if err != nil {
		return nil, err
	}
	prices, err := parsePrices(os.Getenv(PricesEnv))
	if err != nil {
		return nil, err
	}
	return &egressRuntime{guard: guard, edgeKeys: keys, prices: prices}, nil
}

// tlsConfig is the client TLS configuration of SMTP submissions.
func (e *egressRuntime) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: e.roots}
}

// brokerClient is the pooled client of the Vault path's brokered calls;
// broker_timeout bounds each call through its context.
func (e *egressRuntime) brokerClient() *http.Client {
	e.once.Do(func() {
		e.broker = e.guard.Client(egress.ClientOptions{MaxIdleConnsPerHost: 128})
	})
	return e.broker
}

// truncate shortens s for a message.
func truncate(s string, n int) string { return egress.Truncate(s, n) }

func tooLarge(max int64) error { return egress.TooLarge("request", max) }

var errNoEdgeKeys = fmt.Errorf("no edge keys are configured: the operator sets %s when registering the plugin", egress.EdgeKeysEnv)
