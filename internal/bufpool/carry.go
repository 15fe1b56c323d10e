package bufpool

// Carry keeps the unparsed tail of one read (an incomplete frame) for the
// next, in a pooled buffer held only while bytes are carried. The zero value
// carries nothing.
//
//	buf := carry.Join(data)
//	... parse whole frames from the front of buf ...
//	carry.Keep(buf[parsed:])
type Carry struct{ p *[]byte }

// Join returns the bytes to parse: data alone, or the carried bytes
// followed by data.
func (c *Carry) Join(data []byte) []byte {
	if c.p == nil {
		return data
	}
	c.p = Grow(c.p, len(data))
	*c.p = append(*c.p, data...)
	return *c.p
}

// Keep carries rest, the unparsed tail of what Join returned, to the next
// Join. An empty rest releases the buffer.
func (c *Carry) Keep(rest []byte) {
	switch {
	case len(rest) == 0:
		c.Release()
	case c.p == nil:
		c.p = Get(len(rest))
		*c.p = append(*c.p, rest...)
	default:
		// rest is a suffix of the carried buffer: move it to the front.
		*c.p = (*c.p)[:copy(*c.p, rest)]
	}
}

// Release drops whatever is carried.
func (c *Carry) Release() {
	if c.p != nil {
		Put(c.p)
		c.p = nil
	}
}
