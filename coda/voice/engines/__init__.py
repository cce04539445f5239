"""Speech engines behind small interfaces (`base`), their embedded defaults and Wyoming clients."""
