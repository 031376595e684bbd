"""The skin-lesion CNN: config, shared preprocessing, network, training, evaluation and export."""
