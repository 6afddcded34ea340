package controller

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
	"palaver.dev/services/room"
)

// RegistryEntries is the registry topic as read (room.Registry).
type RegistryEntries interface {
	Run(ctx context.Context) error
	Ready() <-chan struct{}
	List() ([]room.Info, error)
}

// RegistrySweeper removes registry entries of rooms that have no ChatRoom
// any more. The finalizer tombstones a room's entry on deletion, but when
// Kafka stays unreachable past the deletion timeout the ChatRoom goes
// without it; the sweeper cleans up once Kafka is back, so the services do
// not offer a room that no longer exists. It is a manager.Runnable that
// needs leader election: only the leader writes the registry.
type RegistrySweeper struct {
	// Reader lists ChatRooms from the API server, not a cache, so that a
	// ChatRoom created a moment ago counts.
	Reader   client.Reader
	Entries  RegistryEntries
	Registry Registry
	// Interval between sweeps (default 5 min).
	Interval time.Duration
	Log      logr.Logger
}

// Start follows the registry topic and sweeps every Interval until ctx is
// done.
func (s *RegistrySweeper) Start(ctx context.Context) error {
	if s.Interval <= 0 {
		s.Interval = 5 * time.Minute
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Entries.Run(ctx); err != nil {
			s.Log.Error(err, "reading the room registry stopped")
		}
	}()
	defer func() { <-done }()
	select {
	case <-ctx.Done():
		return nil
	case <-s.Entries.Ready():
	}
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		if n, err := s.sweep(ctx); err != nil {
			s.Log.Info("sweeping the room registry failed; trying again later", "err", err.Error())
		} else if n > 0 {
			s.Log.Info("removed registry entries of rooms without a ChatRoom", "entries", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sweep tombstones the entries no ChatRoom (in any namespace) claims, and
// returns how many.
func (s *RegistrySweeper) sweep(ctx context.Context) (int, error) {
	var all chatv1alpha1.ChatRoomList
	if err := s.Reader.List(ctx, &all); err != nil {
		return 0, fmt.Errorf("list chatrooms: %w", err)
	}
	names := make(map[string]bool, len(all.Items))
	for _, cr := range all.Items {
		names[cr.Name] = true
	}
	entries, err := s.Entries.List()
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, in := range entries {
		if names[in.Name] {
			continue
		}
		// Ask again about this one name: one may have come since the list.
		var again chatv1alpha1.ChatRoomList
		if err := s.Reader.List(ctx, &again, client.MatchingFields{"metadata.name": in.Name}); err != nil {
			return removed, fmt.Errorf("list chatrooms named %q: %w", in.Name, err)
		}
		if len(again.Items) > 0 {
			continue
		}
		if err := s.Registry.Tombstone(ctx, in.Name); err != nil {
			return removed, err
		}
		removed++
	}
	return removed, nil
}
