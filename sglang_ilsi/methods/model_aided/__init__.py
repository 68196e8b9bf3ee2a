"""Model-aided methods: a co-resident auxiliary model's distribution
(amateur, expert, anti-expert) is combined with the target's."""
