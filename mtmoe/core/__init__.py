"""The light core every layer reads: config, task registry, file and feature names, data formats,
errors. Nothing here imports TensorFlow when imported, so that the command line checks its inputs in
a fraction of a second."""
