"""Real-time beach water-quality pipeline."""
