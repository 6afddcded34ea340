package controller

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
	"palaver.dev/services/room"
)

// memory is what the controller remembers of each ChatRoom between
// reconciles. The controller is the only writer of a ChatRoom's status, so
// the status it last wrote is the truth even when the informer cache has
// not caught up yet; reading it back keeps a reconcile that follows a
// status write closely from acting on the old status (for example, taking
// the topic it just created for someone else's).
type memory struct {
	mu    sync.Mutex
	rooms map[types.NamespacedName]*memo
}

type memo struct {
	uid       types.UID
	status    *chatv1alpha1.ChatRoomStatus // last written
	published *room.Info                   // last registry entry written
	topic     string                       // tracked in the view
}

func newMemory() *memory { return &memory{rooms: map[types.NamespacedName]*memo{}} }

// get returns the memo of cr, new if there was none or it was of an older
// ChatRoom of the same name. The caller must hold no lock; memos are only
// touched by the reconcile of their key, which the workqueue serializes.
func (m *memory) get(key types.NamespacedName, uid types.UID) *memo {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.rooms[key]; ok && r.uid == uid {
		return r
	}
	r := &memo{uid: uid}
	m.rooms[key] = r
	return r
}

// lookup returns the memo of key, if any.
func (m *memory) lookup(key types.NamespacedName) (*memo, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.rooms[key]
	return r, ok
}

func (m *memory) forget(key types.NamespacedName) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.rooms, key)
}
