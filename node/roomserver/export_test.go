package roomserver

import "context"

// Hold keeps a room's worker busy until release is called: what an
// input arriving meanwhile meets when the room is still storing a large
// batch.
func (rs *Roomserver) Hold(ctx context.Context, roomID string) (release func(), err error) {
	r, err := rs.worker(ctx, roomID)
	if err != nil {
		return nil, err
	}
	held, free := make(chan struct{}), make(chan struct{})
	req := &request{ctx: ctx, done: make(chan result, 1), read: func(*room) error {
		close(held)
		<-free
		return nil
	}}
	if err := r.enqueue(ctx, req); err != nil {
		return nil, err
	}
	<-held
	return func() { close(free); <-req.done }, nil
}
