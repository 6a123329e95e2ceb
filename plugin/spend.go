package credentials

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/usage"
	"github.com/clankteam/credentials/plugin/catalog"
)

// PricesEnv is the operator's price tables, which win over the catalog's:
// {"openai": {"gpt-4o": {"input_per_mtok": 2.5, "output_per_mtok": 10}}}.
const PricesEnv = "CREDENTIALS_PRICES"

func parsePrices(raw string) (map[string]map[string]catalog.Price, error) {
	if raw == "" {
		return nil, nil
	}
	var m map[string]map[string]catalog.Price
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: a JSON object of services, each of models and their input_per_mtok and output_per_mtok: %v", PricesEnv, err)
	}
	for svc, p := range m {
		if err := catalog.ValidatePricing(p); err != nil {
			return nil, fmt.Errorf("%s: service %s: %v", PricesEnv, svc, err)
		}
	}
	return m, nil
}

// pricing is svc's price table: the operator's, else the service's own.
func (b *backend) pricing(svc *service) map[string]catalog.Price {
	if p, ok := b.egress.prices[svc.Name]; ok {
		return p
	}
	return svc.Pricing
}

// costOf prices u by svc's table; a model it does not price costs 0, and
// the engine says so in its log once per call.
func (b *backend) costOf(svc *service, u usage.Usage) float64 {
	if u.InputTokens == 0 && u.OutputTokens == 0 {
		return 0
	}
	p, ok := catalog.PriceOf(b.pricing(svc), u.Model)
	if !ok {
		b.logger.Warn("a model without a price: its usage is not counted toward spend limits", "service", svc.Name, "model", u.Model)
		return 0
	}
	return (float64(u.InputTokens)*p.InputPerMTok + float64(u.OutputTokens)*p.OutputPerMTok) / 1e6
}

// meterVaultCall adds the spend an answer of the Vault path reported.
func (b *backend) meterVaultCall(ctx context.Context, s logical.Storage, requester string, svc *service, cred string, header http.Header, body []byte) error {
	if len(b.pricing(svc)) == 0 {
		return nil
	}
	m := usage.NewMeter(header.Get("Content-Type"))
	_, _ = m.Write(body)
	return b.addSpend(ctx, s, requester, cred, b.costOf(svc, m.Usage()))
}
