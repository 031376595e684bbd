"""Turn the 9-class ISIC folder into an audited, leak-free, rebalanced training set."""
