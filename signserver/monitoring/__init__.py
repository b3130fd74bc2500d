"""What a running server reports about itself: the meter seam (:mod:`.meter`), its Prometheus
implementation (:mod:`.prometheus`) and structured logs (:mod:`.logs`)."""
