package credentials

import (
	"context"
	"sync"
	"time"
)

// background runs the engine's own loops (webhook deliveries, health
// checks) beside Vault's periodic function, whose minute is too coarse for
// them: each loop runs its pass every so often, or when woken, on a node
// that may write the mount's storage; cleanup stops them all and waits.
type background struct {
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

func newBackground() *background { return &background{stop: make(chan struct{})} }

// loop runs pass every interval and whenever wake receives (wake may be
// nil), while writeSafe says this node may write. pass's context ends when
// the loops are stopped.
func (bg *background) loop(every time.Duration, wake <-chan struct{}, writeSafe func() bool, pass func(ctx context.Context)) {
	bg.wg.Add(1)
	go func() {
		defer bg.wg.Done()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			<-bg.stop
			cancel()
		}()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-bg.stop:
				return
			case <-tick.C:
			case <-wake:
			}
			if writeSafe() {
				pass(ctx)
			}
		}
	}()
}

// close stops the loops and waits for a pass under way to end.
func (bg *background) close() {
	bg.once.Do(func() { close(bg.stop) })
	bg.wg.Wait()
}
