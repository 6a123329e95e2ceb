// Package credentials is a Vault secrets engine that keeps an organization's
// credentials for its AI agents: OAuth 2.0 grants, API keys, usernames and
// passwords, and files. One mount serves one organization; Vault gives each
// mount its own storage view, so tenants are isolated by Vault itself.
package credentials

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/plugin/store"
)

// Version is the plugin's semantic version, reported to Vault as its
// running version. Release builds override it with -ldflags -X.
var Version = "v0.1.0"

// Factory returns a configured instance of the engine; Vault calls it once per
// mount.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	eg, err := newEgressRuntime()
	if err != nil {
		return nil, err
	}
	b := newBackend(conf, eg)
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	b.startLastUseFlusher(conf.StorageView, lastUseFlushEvery)
	if conf.StorageView != nil {
		b.storage = conf.StorageView
		b.loops = newBackground()
		b.startWebhookDeliverer(b.loops)
		b.startHealthChecks(b.loops)
	}
	return b, nil
}

// backend is the engine for one mount (one organization).
type backend struct {
	*framework.Backend

	// logger never receives secret values: callers pass names and kinds only.
	logger hclog.Logger

	// now is the clock; tests replace it to move time without sleeping.
	now func() time.Time

	// credLocks serialise changes to one credential (keyed by name): every
	// read-modify-write of a credential holds its lock.
	credLocks []*locksutil.LockEntry

	// refsMu guards references from credentials to apps and custom
	// services: writers of oauth2 credentials hold it shared, deleting an
	// app or changing a custom service holds it exclusively.
	refsMu sync.RWMutex

	// index is the inventory LIST creds/ answers from.
	index store.Index

	// lastUse holds uses not yet written to storage; lastUseFlusher
	// writes them every few seconds and when the backend is cleaned up.
	lastUse lastUseTracker
	// trail holds agents' calls not yet stored (trail.go), flushed with
	// last uses; trailSecretCache holds the mount's trail secret once read.
	trail trailTracker
	// limits are the mount's rate limits and budgets (limits.go).
	limits           limiter
	trailSecretCache atomic.Value
	trailSecretMu    sync.Mutex
	lastUseFlusher   *flusher

	// egress holds the operator's dial guard and edge keys, and the
	// connection pools every call to a service goes through.
	egress *egressRuntime
	// vaultPathSlots bounds the Vault path's calls in flight on this
	// mount (a buffered channel used as a semaphore); a call waits up to
	// vaultPathSlotWait for one (tests shorten it).
	vaultPathSlots    chan struct{}
	vaultPathSlotWait time.Duration
	// callers caches the names of entities that call the broker.
	callers callerNames
	// brokerInputs caches the configuration and services the broker reads.
	brokerInputs brokerInputs

	// nodeID tells this backend instance's refresh records from other
	// nodes' (and from an earlier process's).
	nodeID string
	// recoverPending says refresh records may need recovering
	// (refresh_fence.go); true for a new backend.
	recoverPending atomic.Bool
	// metrics are the mount's health series (path_metrics.go).
	metrics *engineMetrics

	// oauth is the OAuth lifecycle's in-memory state: shared refreshes,
	// grants awaiting storage, the refresh schedule's cache.
	oauth *oauthRuntime

	// webhooks delivers the org's events (webhook_delivery.go).
	webhooks *webhookRuntime
	// loops are the engine's own background loops, over storage, the
	// mount's (background.go); nil in unit tests, which call the passes.
	loops   *background
	storage logical.Storage
	// healthWake wakes the health checks (health.go).
	healthWake chan struct{}
	// revokeJobs are the kill-switch jobs running here, by ID;
	// revokeResumed says the jobs a stopped node left were taken up (once
	// per backend: a new active node's backend is a new one).
	revokeJobs    sync.Map
	revokeResumed atomic.Bool
	// approvalsPurged is when old approvals were last forgotten (unix
	// seconds; the backend's start at first): once an hour.
	approvalsPurged atomic.Int64
	// mount is the mount point (orgs/<org>/) as requests name it, for
	// events made outside a request.
	mount atomic.Value
}

func newBackend(conf *logical.BackendConfig, eg *egressRuntime) *backend {
	b := &backend{
		logger:     hclog.NewNullLogger(),
		now:        time.Now,
		credLocks:  locksutil.CreateLocks(),
		egress:     eg,
		oauth:      newOAuthRuntime(eg.guard),
		webhooks:   newWebhookRuntime(eg.guard),
		healthWake: make(chan struct{}, 1),

		nodeID:            newNodeID(),
		vaultPathSlots:    make(chan struct{}, vaultPathConcurrent),
		vaultPathSlotWait: vaultPathSlotWait,
	}
	if conf != nil && conf.Logger != nil {
		b.logger = conf.Logger
	}

	b.Backend = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			// Credential entries, OAuth client secrets, pending connects
			// (PKCE verifiers) and MCP grants (an agent's secret ID) hold
			// secrets: seal-wrap them where the server supports it (Vault
			// Enterprise with an HSM).
			SealWrapStorage: []string{"config", credStoragePrefix, appStoragePrefix, pendingConnectPrefix, mcpGrantPrefix, webhookConfigPrefix},
			// An MCP client redeems a code or a refresh token, and holds
			// no Vault token yet: the code or token is what these check.
			Unauthenticated: []string{"mcp/token", "mcp/token/issued"},
		},
		// Most specific patterns first: creds/<name>/connect before
		// creds/<name>.
		Paths: b.notingMount(answerErrors(framework.PathAppend(
			b.changesBrokerInputs(pathConfig(b)),
			b.changesBrokerInputs(pathServices(b)),
			pathApps(b),
			pathVerify(b),
			pathOAuth(b),
			pathCreds(b),
			pathProxy(b),
			pathMail(b),
			pathRefreshFailing(b),
			pathMetrics(b),
			pathMCP(b),
			pathWebhooks(b),
			pathRevokeAll(b),
			pathTrail(b),
			pathApprovals(b),
			pathLimits(b),
		))),
		Invalidate:     b.invalidate,
		Clean:          b.cleanup,
		PeriodicFunc:   b.periodic,
		RunningVersion: Version,
	}
	b.recoverPending.Store(true)
	documentFields(b.Backend.Paths)
	b.metrics = newEngineMetrics(b)
	return b
}

// invalidate drops cached state another node changed (performance standbys
// and replicas receive the active node's writes this way).
func (b *backend) invalidate(_ context.Context, key string) {
	if store.IsIndexKey(key) {
		b.index.Reset()
	}
	b.brokerInputs.invalidateKey(key)
	b.oauth.sched.invalidate(key)
	if strings.HasPrefix(key, webhookConfigPrefix) {
		b.webhooks.forget()
	}
	if strings.HasPrefix(key, limitPrefix) {
		b.forgetLimits()
	}
	if k, ok := strings.CutPrefix(key, limitUsagePrefix); ok {
		b.forgetLimitUsage(k)
	}
}

// periodic runs about once a minute: it stores the uses recorded in memory
// since the last run and refreshes the OAuth grants that are due. Only the
// node that may write the mount's storage does this work.
func (b *backend) periodic(ctx context.Context, req *logical.Request) error {
	if !b.writeSafe() {
		return nil
	}
	b.flushIfWriteSafe(ctx, req.Storage)
	if err := b.recoverRefreshes(ctx, req.Storage); err != nil {
		b.logger.Warn("recovering refreshes", "error", err)
	}
	if err := b.refreshDue(ctx, req.Storage); err != nil {
		b.logger.Warn("refreshing due grants", "error", err)
	}
	if b.revokeResumed.CompareAndSwap(false, true) {
		if err := b.resumeRevokeJobs(ctx, req.Storage); err != nil {
			b.revokeResumed.Store(false)
			b.logger.Warn("resuming kill-switch jobs", "error", err)
		}
	}
	if b.purgeDue() {
		if err := b.purgeApprovals(ctx, req.Storage); err != nil {
			b.logger.Warn("forgetting old approvals", "error", err)
		}
	}
	if err := b.emitStatusChanges(ctx, req.Storage); err != nil {
		b.logger.Warn("announcing status changes", "error", err)
	}
	b.webhooks.kick()
	return nil
}

// notingMount has each request note the mount point it came by.
func (b *backend) notingMount(paths []*framework.Path) []*framework.Path {
	for _, p := range paths {
		for _, h := range p.Operations {
			po := h.(*framework.PathOperation)
			next := po.Callback
			po.Callback = func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
				if req.MountPoint != "" {
					b.mount.Store(req.MountPoint)
				}
				return next(ctx, req, d)
			}
		}
	}
	return paths
}

func (b *backend) mountPoint() string {
	m, _ := b.mount.Load().(string)
	return m
}

// writeSafe says whether this node may write the mount's storage: not a
// performance standby or a performance secondary's replicated mount.
func (b *backend) writeSafe() bool {
	sys := b.System()
	if sys == nil {
		return true
	}
	state := sys.ReplicationState()
	if state.HasState(consts.ReplicationPerformanceStandby) {
		return false
	}
	return sys.LocalMount() || !state.HasState(consts.ReplicationPerformanceSecondary)
}

const backendHelp = `
The credentials engine keeps an organization's credentials for its AI agents:
OAuth 2.0 grants (kept fresh), API keys, usernames and passwords, and files
such as GCP service-account keys. Reads return metadata only; agents use a
credential through the broker (proxy/<name>), which injects it into their
requests so that no agent ever sees the secret itself.
`
