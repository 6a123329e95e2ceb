package credentials

import (
	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/plugin/catalog"
	"github.com/clankteam/credentials/plugin/provider"
)

// The engine's names for the catalog's (plugin/catalog).
type (
	service    = catalog.Service
	verifyCall = catalog.VerifyCall
	// injection is how one credential type is put into a brokered
	// request; the egress package applies it, for the engine and the edge
	// alike.
	injection = egress.Injection
	// oauthSpec holds a provider's OAuth endpoints and quirks; the
	// provider package speaks the protocol with it.
	oauthSpec = provider.Spec
)

// Credential types.
const (
	typeOAuth2   = catalog.TypeOAuth2
	typeAPIKey   = catalog.TypeAPIKey
	typePassword = catalog.TypePassword
	typeFile     = catalog.TypeFile
)

var (
	credTypes       = catalog.Types
	builtinServices = catalog.Builtin
	hasControl      = catalog.HasControl
)

// Injection styles: how the broker puts a secret into a request.
const (
	injectHeader = egress.StyleHeader // a header, value from Format with {secret}
	injectBasic  = egress.StyleBasic  // HTTP basic; an API key is the user name
	injectQuery  = egress.StyleQuery  // a query parameter
)

// Revocation styles of OAuth providers.
const (
	revokeRFC7009 = provider.RevokeRFC7009
	revokeGitHub  = provider.RevokeGitHub
	revokeSlack   = provider.RevokeSlack
	revokeNone    = provider.RevokeNone
)
