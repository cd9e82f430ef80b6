"""The toy world: a world file -> pretraining corpus, AFT demos, held-out pairs, evaluation."""
