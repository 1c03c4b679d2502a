"""rayrec.routing: the query path's plain logic: fan-out with deadlines, exact top-k merge, requests, replicas,
wire format (no Ray)."""
