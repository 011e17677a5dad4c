"""What a training run needs beside the model and data: loggers and DDP process handling."""
